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


def test_identify_matches_become_nested_elements() -> None:
    xml = to_xml("IdentifyResult", {"Success": True, "Matches": [{"BCID": "bws/1/7", "Score": 0.9}]})
    root = ElementTree.fromstring(xml)
    match = root.find(f"{{{XMLNS}}}Matches/{{{XMLNS}}}Match")
    assert match is not None and match.find(f"{{{XMLNS}}}BCID").text == "bws/1/7"


def test_xml_replies_stay_well_formed_whatever_the_text() -> None:
    """XML 1.0 cannot carry most control characters, not even escaped: they become U+FFFD."""
    body = to_xml("LiveDetectionResult", {"Success": False, "State": "a\x01b\x1b<c>&\ud800"})
    parsed = ElementTree.fromstring(body)
    state = parsed.find(f"{{{XMLNS}}}State")
    assert state is not None and state.text == "a\ufffdb\ufffd<c>&\ufffd"
