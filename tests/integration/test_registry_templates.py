"""RegistryService prompt-template RPCs against a real server."""

from __future__ import annotations

import base64
import json

import grpc
import pytest

from llmops.v1 import registry_service_pb2 as pb
from tests.integration.helpers import Registry, expect_error

SEEDED = ["classification", "extraction", "summarization"]
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def create(
    template_id: str, template: str, task: str = "", description: str = ""
) -> pb.CreatePromptTemplateRequest:
    return pb.CreatePromptTemplateRequest(
        prompt_template=pb.PromptTemplate(
            template_id=template_id, template=template, task=task, description=description
        )
    )


def forged_token(payload: object) -> str:
    """A page token as the server encodes them, with a payload of our choosing."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


async def test_list_returns_the_seeded_templates_ordered_by_id(registry: Registry) -> None:
    response = await registry.ListPromptTemplates(pb.ListPromptTemplatesRequest())
    assert [t.template_id for t in response.prompt_templates] == SEEDED
    assert response.next_page_token == ""
    for template in response.prompt_templates:
        assert template.version == 1
        assert "{text}" in template.template
        assert template.task == template.template_id
        assert template.description
        assert template.create_time.seconds > 0


async def test_get_latest_and_a_given_version(registry: Registry) -> None:
    latest = await registry.GetPromptTemplate(pb.GetPromptTemplateRequest(template_id="extraction"))
    assert latest.template_id == "extraction"
    assert latest.version == 1
    assert latest.template == "Extract the person's full name.\nText: {text}\nName:"
    first = await registry.GetPromptTemplate(
        pb.GetPromptTemplateRequest(template_id="extraction", version=1)
    )
    assert first == latest


async def test_get_unknown_template_or_version_is_not_found(registry: Registry) -> None:
    details = await expect_error(
        registry.GetPromptTemplate(pb.GetPromptTemplateRequest(template_id="no-such")),
        grpc.StatusCode.NOT_FOUND,
    )
    assert details.resource_info is not None
    assert details.resource_info.resource_type == "prompt_template"
    assert details.resource_info.resource_name == "no-such"

    details = await expect_error(
        registry.GetPromptTemplate(
            pb.GetPromptTemplateRequest(template_id="summarization", version=7)
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert details.resource_info is not None
    assert details.resource_info.resource_name == "summarization"
    assert "version 7" in details.message


async def test_get_refuses_a_negative_version_and_a_missing_id(registry: Registry) -> None:
    details = await expect_error(
        registry.GetPromptTemplate(
            pb.GetPromptTemplateRequest(template_id="summarization", version=-1)
        ),
        INVALID,
    )
    assert details.fields == ["version"]

    details = await expect_error(registry.GetPromptTemplate(pb.GetPromptTemplateRequest()), INVALID)
    assert details.fields == ["template_id"]


async def test_create_new_version_becomes_latest(registry: Registry) -> None:
    text = "Summarize in a few words.\nText: {text}\nSummary:"
    created = await registry.CreatePromptTemplate(
        create("summarization", text, task="summarization", description="shorter")
    )
    assert created.template_id == "summarization"
    assert created.version == 2
    assert created.template == text
    assert created.description == "shorter"
    assert created.create_time.seconds > 0

    latest = await registry.GetPromptTemplate(
        pb.GetPromptTemplateRequest(template_id="summarization")
    )
    assert latest == created
    first = await registry.GetPromptTemplate(
        pb.GetPromptTemplateRequest(template_id="summarization", version=1)
    )
    assert first.template.startswith("Summarize in one sentence.")

    versions = await registry.ListPromptTemplateVersions(
        pb.ListPromptTemplateVersionsRequest(template_id="summarization")
    )
    assert [v.version for v in versions.prompt_templates] == [2, 1]
    assert versions.prompt_templates[0] == created
    assert versions.next_page_token == ""

    listed = await registry.ListPromptTemplates(pb.ListPromptTemplatesRequest())
    by_id = {t.template_id: t for t in listed.prompt_templates}
    assert list(by_id) == SEEDED
    assert by_id["summarization"] == created


async def test_create_a_new_template_with_literal_braces(registry: Registry) -> None:
    text = 'Answer as JSON {{"name": ...}}.\nText: {text}\nJSON:'
    created = await registry.CreatePromptTemplate(create("json-extract", text, task="extraction"))
    assert (created.template_id, created.version) == ("json-extract", 1)
    listed = await registry.ListPromptTemplates(pb.ListPromptTemplatesRequest())
    assert [t.template_id for t in listed.prompt_templates] == [
        "classification",
        "extraction",
        "json-extract",
        "summarization",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Summarize this.", "must contain {text}"),
        ("Hello {name}: {text}", "unknown placeholder {name}"),
        ("Text: {} {text}", "positional placeholder {}"),
        ("Text: {0}", "positional placeholder {0}"),
        ("Text: {text!r}", "conversion or format spec"),
        ("Text: {text", "malformed braces"),
        ("   ", "template is empty"),
    ],
)
async def test_create_refuses_an_invalid_text(registry: Registry, text: str, problem: str) -> None:
    details = await expect_error(
        registry.CreatePromptTemplate(create("summarization", text)), INVALID
    )
    assert set(details.fields) == {"prompt_template.template"}
    assert any(problem in d.description for d in details.bad_request.field_violations)  # type: ignore[union-attr]
    versions = await registry.ListPromptTemplateVersions(
        pb.ListPromptTemplateVersionsRequest(template_id="summarization")
    )
    assert [v.version for v in versions.prompt_templates] == [1]


async def test_create_lists_every_problem_of_a_text(registry: Registry) -> None:
    details = await expect_error(
        registry.CreatePromptTemplate(create("new", "Hello {name} and {}")), INVALID
    )
    descriptions = [v.description for v in details.bad_request.field_violations]  # type: ignore[union-attr]
    assert len(descriptions) == 3
    assert "unknown placeholder {name}" in descriptions[0]
    assert "positional placeholder {}" in descriptions[1]
    assert "must contain {text}" in descriptions[2]


@pytest.mark.parametrize(
    "template_id", ["Summarization", "my template", "-lead", "_lead", "a/b", "x" * 64, "naïve"]
)
async def test_create_refuses_an_invalid_id(registry: Registry, template_id: str) -> None:
    details = await expect_error(
        registry.CreatePromptTemplate(create(template_id, "Text: {text}")), INVALID
    )
    assert details.fields == ["prompt_template.template_id"]
    listed = await registry.ListPromptTemplates(pb.ListPromptTemplatesRequest())
    assert [t.template_id for t in listed.prompt_templates] == SEEDED


async def test_create_refuses_a_missing_template_or_id(registry: Registry) -> None:
    details = await expect_error(
        registry.CreatePromptTemplate(pb.CreatePromptTemplateRequest()), INVALID
    )
    assert details.fields == ["prompt_template"]
    details = await expect_error(registry.CreatePromptTemplate(create("", "Text: {text}")), INVALID)
    assert details.fields == ["prompt_template.template_id"]


async def test_validate_reports_without_storing(registry: Registry) -> None:
    valid = await registry.ValidatePromptTemplate(
        pb.ValidatePromptTemplateRequest(template="Say {{hi}}: {text} then {text}")
    )
    assert valid.valid
    assert list(valid.problems) == []
    assert list(valid.placeholders) == ["text"]

    invalid = await registry.ValidatePromptTemplate(
        pb.ValidatePromptTemplateRequest(template="Hello {name}")
    )
    assert not invalid.valid
    assert len(invalid.problems) == 2
    assert "unknown placeholder {name}" in invalid.problems[0]
    assert "must contain {text}" in invalid.problems[1]

    malformed = await registry.ValidatePromptTemplate(
        pb.ValidatePromptTemplateRequest(template="Text: {text")
    )
    assert not malformed.valid
    assert list(malformed.placeholders) == []

    empty = await registry.ValidatePromptTemplate(pb.ValidatePromptTemplateRequest())
    assert not empty.valid
    assert list(empty.problems) == ["template is empty"]

    listed = await registry.ListPromptTemplates(pb.ListPromptTemplatesRequest())
    assert [t.template_id for t in listed.prompt_templates] == SEEDED


async def test_list_pages_one_by_one(registry: Registry) -> None:
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = await registry.ListPromptTemplates(
            pb.ListPromptTemplatesRequest(page_size=1, page_token=token)
        )
        pages += 1
        assert len(response.prompt_templates) == 1
        seen.append(response.prompt_templates[0].template_id)
        token = response.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == SEEDED

    two = await registry.ListPromptTemplates(pb.ListPromptTemplatesRequest(page_size=2))
    assert [t.template_id for t in two.prompt_templates] == SEEDED[:2]
    rest = await registry.ListPromptTemplates(
        pb.ListPromptTemplatesRequest(page_size=2, page_token=two.next_page_token)
    )
    assert [t.template_id for t in rest.prompt_templates] == SEEDED[2:]
    assert rest.next_page_token == ""


async def test_versions_page_one_by_one(registry: Registry) -> None:
    for n in range(2, 5):
        await registry.CreatePromptTemplate(create("extraction", f"v{n}: {{text}}"))
    versions: list[int] = []
    token = ""
    while True:
        response = await registry.ListPromptTemplateVersions(
            pb.ListPromptTemplateVersionsRequest(
                template_id="extraction", page_size=1, page_token=token
            )
        )
        versions += [t.version for t in response.prompt_templates]
        token = response.next_page_token
        if not token:
            break
    assert versions == [4, 3, 2, 1]


async def test_versions_of_an_unknown_template_is_not_found(registry: Registry) -> None:
    details = await expect_error(
        registry.ListPromptTemplateVersions(
            pb.ListPromptTemplateVersionsRequest(template_id="no-such")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert details.resource_info is not None
    assert details.resource_info.resource_name == "no-such"
    details = await expect_error(
        registry.ListPromptTemplateVersions(pb.ListPromptTemplateVersionsRequest()), INVALID
    )
    assert details.fields == ["template_id"]


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "%%%",
        forged_token(["o", 1]),
        forged_token({"o": "one", "f": "[]"}),
        forged_token({"f": "[]"}),
        forged_token({"o": -1, "f": "[]"}),
        forged_token({"o": 10**30, "f": "[]"}),
        forged_token({"o": float("inf"), "f": "[]"}),
        forged_token({"o": 1, "f": '["other"]'}),
    ],
    ids=[
        "garbage",
        "not-base64",
        "not-an-object",
        "offset-not-a-number",
        "no-offset",
        "negative-offset",
        "huge-offset",
        "infinite-offset",
        "other-filters",
    ],
)
async def test_list_refuses_a_tampered_page_token(registry: Registry, token: str) -> None:
    details = await expect_error(
        registry.ListPromptTemplates(pb.ListPromptTemplatesRequest(page_token=token)), INVALID
    )
    assert details.fields == ["page_token"]


async def test_list_refuses_an_edited_real_token(registry: Registry) -> None:
    first = await registry.ListPromptTemplates(pb.ListPromptTemplatesRequest(page_size=1))
    token = first.next_page_token
    assert token
    for edited in (token[:-3], token + "x", token[::-1]):
        details = await expect_error(
            registry.ListPromptTemplates(
                pb.ListPromptTemplatesRequest(page_size=1, page_token=edited)
            ),
            INVALID,
        )
        assert details.fields == ["page_token"]


async def test_a_token_reused_with_other_filters_is_refused(registry: Registry) -> None:
    await registry.CreatePromptTemplate(create("extraction", "v2: {text}"))
    first = await registry.ListPromptTemplateVersions(
        pb.ListPromptTemplateVersionsRequest(template_id="extraction", page_size=1)
    )
    assert first.next_page_token
    details = await expect_error(
        registry.ListPromptTemplateVersions(
            pb.ListPromptTemplateVersionsRequest(
                template_id="summarization", page_size=1, page_token=first.next_page_token
            )
        ),
        INVALID,
    )
    assert details.fields == ["page_token"]
    # The same token with the same filters still works, and a page size change is allowed.
    second = await registry.ListPromptTemplateVersions(
        pb.ListPromptTemplateVersionsRequest(
            template_id="extraction", page_size=5, page_token=first.next_page_token
        )
    )
    assert [t.version for t in second.prompt_templates] == [1]


async def test_list_refuses_a_negative_page_size(registry: Registry) -> None:
    details = await expect_error(
        registry.ListPromptTemplates(pb.ListPromptTemplatesRequest(page_size=-1)), INVALID
    )
    assert details.fields == ["page_size"]


async def test_errors_carry_the_callers_request_id(registry: Registry) -> None:
    call = registry.GetPromptTemplate(
        pb.GetPromptTemplateRequest(template_id="no-such"),
        metadata=(("x-request-id", "req-templates-1"),),
    )
    details = await expect_error(call, grpc.StatusCode.NOT_FOUND)
    assert details.request_info is not None
    assert details.request_info.request_id == "req-templates-1"
