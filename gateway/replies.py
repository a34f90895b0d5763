"""Result bodies as BWS sends them: JSON by default, .NET data-contract XML on request."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

from aiohttp import web

XML_TYPES = ("application/xml", "text/xml")
XMLNS_I = "http://www.w3.org/2001/XMLSchema-instance"
XMLNS = "http://schemas.datacontract.org/2004/07/BioID.Services"


def wants_xml(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "").lower()
    return any(t in accept for t in XML_TYPES) and "application/json" not in accept


def to_xml(root_name: str, fields: dict[str, Any]) -> bytes:
    """``<EnrollResult xmlns:i=... xmlns=...><Error>..</Error><Success>..</Success></EnrollResult>``.

    Elements appear in alphabetical order, as the .NET DataContractSerializer writes them.
    """
    root = ElementTree.Element(root_name, {"xmlns:i": XMLNS_I, "xmlns": XMLNS})
    for name in sorted(fields):
        value = fields[name]
        element = ElementTree.SubElement(root, name)
        element.text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=False)


def result(request: web.Request, root_name: str, fields: dict[str, Any]) -> web.Response:
    """A 200 result, in the format the client asked for."""
    if wants_xml(request):
        return web.Response(body=to_xml(root_name, fields), content_type="application/xml", charset="utf-8")
    return web.json_response(fields)
