"""The host's URLs: its admin and shop, and Notifier mounted under /notifications/."""

from django.contrib import admin
from django.urls import include, path

from tests.host.shop.views import ship_order

urlpatterns = [
    path("admin/", admin.site.urls),
    path("shop/orders/<str:number>/ship/", ship_order, name="ship-order"),
    # --- notifier: urls ---
    path("notifications/", include("notifier.urls")),
    # --- end ---
]
