"""Search by substring, in any case: the dashboard's search box and the API's `q` filters."""

from __future__ import annotations

import pytest
from django.utils import timezone

from dashboard.tests.conftest import make_alert, make_student

pytestmark = pytest.mark.django_db


def make_cell(subject: str, region: str):
    from metrics.models import SubjectRegionSnapshot

    return SubjectRegionSnapshot.objects.create(subject=subject, region=region, updated_at=timezone.now())


def make_tutor(tutor_id: str):
    from metrics.models import TutorSnapshot

    now = timezone.now()
    return TutorSnapshot.objects.create(tutor_id=tutor_id, as_of=now, updated_at=now)


def test_dashboard_search_math_finds_the_mathematics_cells(staff_client):
    make_cell("Mathematics", "west")
    make_cell("Mathematics", "east")
    make_cell("Physics", "west")
    html = staff_client.get("/search?q=math").content.decode()
    assert "/entities/subject_region/Mathematics%7Cwest" in html
    assert "/entities/subject_region/Mathematics%7Ceast" in html
    assert "Physics" not in html


def test_dashboard_search_finds_ids_containing_the_text_in_any_case(staff_client):
    for sid in ("stu_12", "stu_120", "XSTU_120", "stu_13"):
        make_student(sid)
    make_tutor("tut_stu_12x")
    html = staff_client.get("/search?q=Stu_12").content.decode()
    for sid in ("stu_12", "stu_120", "XSTU_120"):
        assert f"/entities/student/{sid}" in html, sid
    assert "/entities/tutor/tut_stu_12x" in html
    assert "/entities/student/stu_13" not in html


def test_dashboard_search_is_bounded(staff_client):
    for i in range(30):
        make_student(f"stu_x{i:02d}")
    html = staff_client.get("/search?q=x").content.decode()
    assert html.count("/entities/student/stu_x") == 20


def test_dashboard_search_treats_like_wildcards_literally(staff_client):
    make_student("stu_1")
    make_student("stu%1")
    resp = staff_client.get("/search?q=u%25")  # "u%": one match, so straight to it
    assert resp.status_code == 302 and resp["Location"] == "/entities/student/stu%251"


def test_api_entity_lists_filter_by_substring(client, api_key):
    for sid in ("stu_12", "STU_120", "stu_21"):
        make_student(sid)
    make_tutor("tut_Maths_1")
    make_tutor("tut_2")
    make_cell("Mathematics", "west")
    make_cell("Physics", "northwest")
    headers = {"HTTP_X_API_KEY": api_key}
    ids = [r["entity_id"] for r in client.get("/api/entities/student?q=stu_12", **headers).json()["results"]]
    assert sorted(ids) == ["STU_120", "stu_12"]
    ids = [r["entity_id"] for r in client.get("/api/entities/tutor?q=maths", **headers).json()["results"]]
    assert ids == ["tut_Maths_1"]
    cells = client.get("/api/entities/subject_region?q=MATH", **headers).json()["results"]
    assert [c["entity_id"] for c in cells] == ["Mathematics|west"]
    cells = client.get("/api/entities/subject_region?q=west&order=subject", **headers).json()["results"]
    assert [c["entity_id"] for c in cells] == ["Mathematics|west", "Physics|northwest"]


def test_api_alert_list_filters_by_substring(client, api_key):
    make_alert(entity_id="stu_12")
    make_alert(entity_id="stu_99", message="Student stu_99 Mathematics drop")
    make_alert(entity_id="stu_3")
    headers = {"HTTP_X_API_KEY": api_key}
    ids = [r["entity_id"] for r in client.get("/api/alerts?q=STU_1", **headers).json()["results"]]
    assert ids == ["stu_12"]
    ids = [r["entity_id"] for r in client.get("/api/alerts?q=math", **headers).json()["results"]]
    assert ids == ["stu_99"]


def test_api_search_text_over_100_characters_is_a_400_naming_q(client, api_key):
    resp = client.get("/api/entities/student?q=" + "x" * 101, HTTP_X_API_KEY=api_key)
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "q"
    resp = client.get("/api/alerts?q=" + "x" * 101, HTTP_X_API_KEY=api_key)
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "q"
