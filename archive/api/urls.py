"""URLs of the owner's data rights."""

from django.urls import path

from archive.api.views import OwnerErasureView, OwnerExportView

urlpatterns = [
    path("me/export", OwnerExportView.as_view(), name="me-export"),
    path("me", OwnerErasureView.as_view(), name="me"),
]
