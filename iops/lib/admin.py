from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """Derived or audit rows: look, filter, search; never edit by hand."""

    show_full_result_count = False  # no COUNT(*) over a large table on every changelist

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class AuditAdmin(ReadOnlyAdmin):
    """A record of what happened (raw events, threshold changes): not even deleted by hand."""

    def has_delete_permission(self, request, obj=None):
        return False
