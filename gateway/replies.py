"""Result bodies as BWS sends them: JSON by default, .NET data-contract XML on request."""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree

from aiohttp import web

XML_TYPES = ("application/xml", "text/xml")
# What XML 1.0 cannot carry at all, not even as a character reference (the C0 controls but tab,
# newline and carriage return; surrogates; U+FFFE, U+FFFF): never in a reply.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_can_carry(text: str) -> bool:
    """Whether ``text`` can stand in an XML reply as it is."""
    return _XML_ILLEGAL.search(text) is None
XMLNS_I = "http://www.w3.org/2001/XMLSchema-instance"
XMLNS = "http://schemas.datacontract.org/2004/07/BioID.Services"


def wants_xml(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "").lower()
    return any(t in accept for t in XML_TYPES) and "application/json" not in accept


def _fill(element: ElementTree.Element, value: Any) -> None:
    if isinstance(value, bool):
        element.text = "true" if value else "false"
    elif isinstance(value, dict):
        for name in sorted(value):
            if value[name] is not None:
                _fill(ElementTree.SubElement(element, name), value[name])
    elif isinstance(value, list):  # e.g. Matches → <Matches><Match>...</Match></Matches>
        for item in value:
            _fill(ElementTree.SubElement(element, element.tag.removesuffix("es")), item)
    else:
        element.text = _XML_ILLEGAL.sub("\ufffd", str(value))


def to_xml(root_name: str, fields: dict[str, Any]) -> bytes:
    """``<EnrollResult xmlns:i=... xmlns=...><Error>..</Error><Success>..</Success></EnrollResult>``.

    Elements appear in alphabetical order, as the .NET DataContractSerializer writes them.
    """
    root = ElementTree.Element(root_name, {"xmlns:i": XMLNS_I, "xmlns": XMLNS})
    _fill(root, fields)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=False)


def result(request: web.Request, root_name: str, fields: dict[str, Any]) -> web.Response:
    """A 200 result, in the format the client asked for."""
    if wants_xml(request):
        return web.Response(body=to_xml(root_name, fields), content_type="application/xml", charset="utf-8")
    return web.json_response(fields)
