"""Bulk alert actions in the admin: acknowledge and resolve at once; dismiss asks for a reason first."""

from __future__ import annotations

import pytest

from alerts.models import Alert

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/alerts/alert/"


def test_bulk_dismiss_asks_for_a_reason_then_records_it_on_each_alert(admin_client, admin_user, make_alert):
    open_ = make_alert(entity_id="stu_a")
    acked = make_alert(entity_id="stu_b")
    resolved = make_alert(entity_id="stu_c")
    admin_client.post(CHANGELIST, {"action": "acknowledge", "_selected_action": [acked.pk]})
    admin_client.post(CHANGELIST, {"action": "resolve", "_selected_action": [resolved.pk]})
    selected = [open_.pk, acked.pk, resolved.pk]

    page = admin_client.post(CHANGELIST, {"action": "dismiss", "_selected_action": selected})
    html = page.content.decode()
    assert page.status_code == 200 and "Dismiss 3 alerts?" in html and 'name="reason"' in html
    assert Alert.objects.filter(status="dismissed").count() == 0  # nothing happens before the reason

    blank = admin_client.post(
        CHANGELIST, {"action": "dismiss", "_selected_action": selected, "apply": "1", "reason": "  "}
    )
    assert blank.status_code == 200 and "Select a valid choice" in blank.content.decode()
    assert 'value="false_positive"' in blank.content.decode()  # the fixed list is offered
    assert Alert.objects.filter(status="dismissed").count() == 0

    done = admin_client.post(
        CHANGELIST,
        {
            "action": "dismiss",
            "_selected_action": selected,
            "apply": "1",
            "reason": "known_issue",
            "note": "known outage",
        },
        follow=True,
    )
    assert "Dismissed 2 alert(s) (1 skipped" in done.content.decode()
    statuses = dict(Alert.objects.values_list("pk", "status"))
    assert statuses == {open_.pk: "dismissed", acked.pk: "dismissed", resolved.pk: "resolved"}
    for alert in Alert.objects.filter(status="dismissed"):
        assert alert.dismiss_reason == "known_issue: known outage" and alert.closed_by == admin_user
        last = alert.transitions.last()
        assert (last.to_status, last.note, last.by) == ("dismissed", "known_issue: known outage", admin_user)
        assert (alert.label.label, alert.label.reason, alert.label.by) == (
            "dismissed",
            "known_issue",
            admin_user,
        )


def test_bulk_acknowledge_and_resolve_report_what_they_did(admin_client, make_alert):
    a, b = make_alert(entity_id="stu_a"), make_alert(entity_id="stu_b")
    resp = admin_client.post(
        CHANGELIST, {"action": "acknowledge", "_selected_action": [a.pk, b.pk]}, follow=True
    )
    assert "Acknowledged 2 alert(s)." in resp.content.decode()
    resp = admin_client.post(CHANGELIST, {"action": "acknowledge", "_selected_action": [a.pk]}, follow=True)
    assert "Acknowledged 0 alert(s) (1 skipped" in resp.content.decode()
    resp = admin_client.post(CHANGELIST, {"action": "resolve", "_selected_action": [a.pk, b.pk]}, follow=True)
    assert "Resolved 2 alert(s)." in resp.content.decode()
    assert set(Alert.objects.values_list("status", flat=True)) == {"resolved"}
