from django.contrib import admin

from metrics import models


class ReadOnly(admin.ModelAdmin):
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(models.StudentSnapshot)
class StudentSnapshotAdmin(ReadOnly):
    list_display = (
        "student_id",
        "health_score",
        "platform_health_score",
        "sessions_7d",
        "sessions_14d",
        "sessions_30d",
        "ib_calls_14d",
        "velocity_trend",
        "first_session_ok",
        "updated_at",
    )
    list_filter = ("velocity_trend", "first_session_ok", "platform_churn_risk")
    search_fields = ("=student_id",)
    ordering = ("health_score",)


@admin.register(models.TutorSnapshot)
class TutorSnapshotAdmin(ReadOnly):
    list_display = (
        "tutor_id",
        "sessions_7d",
        "sessions_30d",
        "avg_rating",
        "rated_sessions",
        "completion_rate",
        "available_hours",
        "utilisation",
        "burnout_risk",
        "region",
        "updated_at",
    )
    list_filter = ("region",)
    search_fields = ("=tutor_id",)
    ordering = ("-utilisation",)


@admin.register(models.SubjectRegionSnapshot)
class SubjectRegionSnapshotAdmin(ReadOnly):
    list_display = (
        "subject",
        "region",
        "balance_status",
        "demand_supply_ratio",
        "own_ratio",
        "active_students",
        "available_tutors",
        "platform_demand_score",
        "platform_supply_score",
        "status_since",
        "updated_at",
    )
    list_filter = ("balance_status", "region")
    search_fields = ("subject", "region")


@admin.register(models.Session)
class SessionAdmin(ReadOnly):
    list_display = (
        "session_id",
        "student_id",
        "tutor_id",
        "subject",
        "started_at",
        "completed_at",
        "completed_successfully",
        "student_rating",
    )
    list_filter = ("completed_successfully", "subject")
    search_fields = ("=session_id", "=student_id", "=tutor_id")


@admin.register(models.StudentHourly)
class StudentHourlyAdmin(ReadOnly):
    list_display = ("student_id", "hour", "sessions_started", "sessions_completed", "ib_calls")
    search_fields = ("=student_id",)


@admin.register(models.TutorHourly)
class TutorHourlyAdmin(ReadOnly):
    list_display = ("tutor_id", "hour", "sessions_started", "sessions_completed", "minutes")
    search_fields = ("=tutor_id",)


@admin.register(models.GlobalMinute)
class GlobalMinuteAdmin(ReadOnly):
    list_display = (
        "minute",
        "shard",
        "received",
        "events",
        "sessions_started",
        "sessions_completed",
        "ib_calls",
    )
    ordering = ("-minute", "shard")


@admin.register(models.SupplyDemandReading)
class SupplyDemandReadingAdmin(ReadOnly):
    list_display = ("subject", "region", "reported_at", "demand_score", "supply_score", "balance_status")
    list_filter = ("region", "subject")
    ordering = ("-reported_at",)
