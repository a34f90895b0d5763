"""Result bodies (gateway/replies.py): the XML shape BWS clients parse."""

from __future__ import annotations

from xml.etree import ElementTree

from gateway.replies import XMLNS, to_xml


def test_enroll_result_xml_matches_the_data_contract_shape() -> None:
    xml = to_xml("EnrollResult", {"Success": False, "Error": "LiveDetectionFailed"}).decode()
    assert xml.startswith('<EnrollResult xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns="')
    root = ElementTree.fromstring(xml)
    assert [child.tag for child in root] == [f"{{{XMLNS}}}Error", f"{{{XMLNS}}}Success"]
    assert root.find(f"{{{XMLNS}}}Success").text == "false"
