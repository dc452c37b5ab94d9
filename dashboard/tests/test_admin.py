"""The admin as an ops tool: every model is there, changelists render, branding links back."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse

from dashboard.tests.conftest import make_alert, make_insight

pytestmark = pytest.mark.django_db


def test_every_project_model_is_registered():
    missing = [
        m._meta.label
        for app in ("ingest", "metrics", "alerts", "insights")
        for m in apps.get_app_config(app).get_models()
        if not admin.site.is_registered(m)
    ]
    assert missing == []


def test_every_changelist_renders_with_data(admin_client):
    alert = make_alert(entity_id="stu_adm")
    make_insight("stu_adm", alert_id=alert.pk)
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        resp = admin_client.get(url)
        assert resp.status_code == 200, url
    html = admin_client.get("/admin/insights/insight/").content.decode()
    assert "stu_adm" in html and 'href="/entities/student/stu_adm"' in html


def test_admin_is_branded_and_links_to_the_dashboard(admin_client):
    html = admin_client.get("/admin/").content.decode()
    assert "IOps operations" in html and '<a href="/">Dashboard</a>' in html


def test_insights_are_read_only_in_the_admin(admin_client):
    insight = make_insight("stu_ro")
    assert admin_client.get("/admin/insights/insight/add/").status_code == 403
    resp = admin_client.post(f"/admin/insights/insight/{insight.pk}/change/", {"risk": 0.1})
    assert resp.status_code == 403
