"""The BWS 3 protos are wire-identical to BioID's: every service, method, message, field name,
number, type and label as BioID's files define them (written out here from BioID's published
contract, ../shared/docs/bws3-api.md appendix A), and nothing more."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from bws.bws3 import bws_pb2, bwsmessages_pb2, facerecognition_pb2

R = "repeated"
# message full name -> {field name: (number, type, label)}; type: a scalar's name or a message's full name
EXPECTED: dict[str, dict[str, tuple[int, str, str]]] = {
    "ImageData": {"image": (1, "bytes", ""), "tags": (2, "string", R)},
    "ImageProperties": {"rotated": (1, "int32", ""), "faces": (2, "Face", R), "quality_score": (3, "double", ""),
                        "quality_assessments": (4, "QualityAssessment", R), "frame_number": (5, "int32", "")},
    "Face": {"left_eye": (2, "PointD", ""), "right_eye": (3, "PointD", ""),
             "texture_liveness_score": (11, "double", ""), "motion_liveness_score": (12, "double", ""),
             "movement_direction": (13, "double", "")},
    "PointD": {"x": (1, "double", ""), "y": (2, "double", "")},
    "RectangleD": {"x": (1, "double", ""), "y": (2, "double", ""), "width": (3, "double", ""),
                   "height": (4, "double", "")},
    "QualityAssessment": {"check": (1, "string", ""), "score": (2, "double", ""), "message": (3, "string", "")},
    "JobError": {"error_code": (1, "string", ""), "message": (2, "string", "")},
    "bioid.services.v1.FaceEnrollmentRequest": {"classId": (1, "int64", ""), "images": (2, "ImageData", R)},
    "bioid.services.v1.FaceEnrollmentResponse": {
        "status": (1, "JobStatus", ""), "errors": (2, "JobError", R), "image_properties": (3, "ImageProperties", R),
        "performed_action": (4, "bioid.services.v1.FaceEnrollmentResponse.EnrollmentAction", ""),
        "enrolled_images": (5, "int32", ""), "template_status": (6, "bioid.services.v1.FaceTemplateStatus", "")},
    "bioid.services.v1.FaceVerificationRequest": {"classId": (1, "int64", ""), "image": (2, "ImageData", "")},
    "bioid.services.v1.FaceVerificationResponse": {
        "status": (1, "JobStatus", ""), "errors": (2, "JobError", R), "image_properties": (3, "ImageProperties", ""),
        "verified": (4, "bool", ""), "score": (5, "double", "")},
    "bioid.services.v1.FaceSearchRequest": {"images": (1, "ImageData", R), "tags": (2, "string", R),
                                            "top_matches": (3, "bool", "")},
    "bioid.services.v1.FaceSearchResponse": {
        "status": (1, "JobStatus", ""), "errors": (2, "JobError", R), "image_properties": (3, "ImageProperties", R),
        "result": (4, "bioid.services.v1.FaceSearchResponse.SearchResult", R)},
    "bioid.services.v1.FaceSearchResponse.SearchResult": {
        "matches": (1, "bioid.services.v1.FaceSearchResponse.TemplateMatchResult", R)},
    "bioid.services.v1.FaceSearchResponse.TemplateMatchResult": {"classId": (1, "int64", ""),
                                                                 "score": (2, "double", "")},
    "bioid.services.v1.SetTemplateTagsRequest": {"classId": (1, "int64", ""), "tags": (2, "string", R)},
    "bioid.services.v1.SetTemplateTagsResponse": {},
    "bioid.services.v1.FaceTemplateStatusRequest": {"classId": (1, "int64", ""),
                                                    "download_thumbnails": (2, "bool", "")},
    "bioid.services.v1.FaceTemplateStatus": {
        "classId": (1, "int64", ""), "available": (2, "bool", ""),
        "enrolled": (3, "google.protobuf.Timestamp", ""), "tags": (4, "string", R),
        "encoder_version": (5, "int32", ""), "feature_vectors": (6, "int32", ""),
        "thumbnails_stored": (7, "int32", ""),
        "thumbnails": (8, "bioid.services.v1.FaceTemplateStatus.Thumbnail", R)},
    "bioid.services.v1.FaceTemplateStatus.Thumbnail": {"enrolled": (1, "google.protobuf.Timestamp", ""),
                                                       "image": (2, "bytes", "")},
    "bioid.services.v1.DeleteTemplateRequest": {"classId": (1, "int64", "")},
    "bioid.services.v1.DeleteTemplateResponse": {},
    "bioid.services.v1.LivenessDetectionRequest": {"live_images": (1, "ImageData", R)},
    "bioid.services.v1.VideoLivenessDetectionRequest": {"video": (1, "bytes", "")},
    "bioid.services.v1.LivenessDetectionResponse": {
        "status": (1, "JobStatus", ""), "errors": (2, "JobError", R), "image_properties": (3, "ImageProperties", R),
        "live": (4, "bool", ""), "liveness_score": (5, "double", "")},
    "bioid.services.v1.PhotoVerifyRequest": {"live_images": (1, "ImageData", R), "photo": (2, "bytes", ""),
                                             "disable_liveness_detection": (3, "bool", "")},
    "bioid.services.v1.PhotoVerifyResponse": {
        "status": (1, "JobStatus", ""), "errors": (2, "JobError", R), "image_properties": (3, "ImageProperties", R),
        "photo_properties": (4, "ImageProperties", ""),
        "verification_level": (5, "bioid.services.v1.PhotoVerifyResponse.AccuracyLevel", ""),
        "verification_score": (6, "double", ""), "live": (7, "bool", ""), "liveness_score": (8, "double", "")},
}
METHODS = {"Enroll": ("FaceEnrollmentRequest", "FaceEnrollmentResponse"),
           "Verify": ("FaceVerificationRequest", "FaceVerificationResponse"),
           "Search": ("FaceSearchRequest", "FaceSearchResponse"),
           "SetTemplateTags": ("SetTemplateTagsRequest", "SetTemplateTagsResponse"),
           "GetTemplateStatus": ("FaceTemplateStatusRequest", "FaceTemplateStatus"),
           "DeleteTemplate": ("DeleteTemplateRequest", "DeleteTemplateResponse")}
_SCALARS = {FieldDescriptor.TYPE_BYTES: "bytes", FieldDescriptor.TYPE_STRING: "string",
            FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_INT64: "int64",
            FieldDescriptor.TYPE_DOUBLE: "double", FieldDescriptor.TYPE_BOOL: "bool"}


def _messages() -> dict[str, Descriptor]:
    found: dict[str, Descriptor] = {}

    def walk(descriptor: Descriptor) -> None:
        found[descriptor.full_name] = descriptor
        for nested in descriptor.nested_types:
            walk(nested)

    for module in (bwsmessages_pb2, facerecognition_pb2, bws_pb2):
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            walk(descriptor)
    return found


def _shape(field: FieldDescriptor) -> tuple[int, str, str]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        kind = field.message_type.full_name
    elif field.type == FieldDescriptor.TYPE_ENUM:
        kind = field.enum_type.full_name
    else:
        kind = _SCALARS[field.type]
    return field.number, kind, R if field.is_repeated else ""


def test_every_message_has_exactly_bioids_fields() -> None:
    found = _messages()
    assert set(found) == set(EXPECTED)
    for name, fields in EXPECTED.items():
        assert {f.name: _shape(f) for f in found[name].fields} == fields, name


def test_the_enums_have_bioids_values() -> None:
    assert {v.name: v.number for v in bwsmessages_pb2.DESCRIPTOR.enum_types_by_name["JobStatus"].values} == {
        "SUCCEEDED": 0, "FAULTED": 1, "CANCELLED": 2}
    action = facerecognition_pb2.FaceEnrollmentResponse.DESCRIPTOR.enum_types_by_name["EnrollmentAction"]
    assert {v.name: v.number for v in action.values} == {
        "NONE": 0, "NEW_TEMPLATE_CREATED": 1, "TEMPLATE_UPDATED": 2, "TEMPLATE_UPGRADED": 3, "TEMPLATE_IMPORTED": 4,
        "ENROLLMENT_FAILED": -1}


def test_the_accuracy_levels_are_bioids() -> None:
    levels = bws_pb2.PhotoVerifyResponse.DESCRIPTOR.enum_types_by_name["AccuracyLevel"]
    assert {v.name: v.number for v in levels.values} == {
        "NOT_RECOGNIZED": 0, "LEVEL_1": 1, "LEVEL_2": 2, "LEVEL_3": 3, "LEVEL_4": 4, "LEVEL_5": 5}


def test_the_liveness_service_has_bioids_methods() -> None:
    service = bws_pb2.DESCRIPTOR.services_by_name["BioIDWebService"]
    assert service.full_name == "bioid.services.v1.BioIDWebService"
    assert {m.name: (m.input_type.name, m.output_type.name) for m in service.methods} == {
        "LivenessDetection": ("LivenessDetectionRequest", "LivenessDetectionResponse"),
        "VideoLivenessDetection": ("VideoLivenessDetectionRequest", "LivenessDetectionResponse"),
        "PhotoVerify": ("PhotoVerifyRequest", "PhotoVerifyResponse")}
    assert not any(m.client_streaming or m.server_streaming for m in service.methods)


def test_the_service_has_bioids_methods() -> None:
    service = facerecognition_pb2.DESCRIPTOR.services_by_name["FaceRecognition"]
    assert service.full_name == "bioid.services.v1.FaceRecognition"
    assert {m.name: (m.input_type.name, m.output_type.name) for m in service.methods} == METHODS
    assert not any(m.client_streaming or m.server_streaming for m in service.methods)
