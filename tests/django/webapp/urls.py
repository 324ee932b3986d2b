from django.contrib import admin
from django.urls import path

from webapp import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz/", views.healthz),
    path("meta/", views.meta),
    path("redirect/", views.redirect_view),
    path("target/", views.target, name="target"),
    path("session/", views.session),
    path("upload/", views.upload),
    path("big/", views.big),
    path("busy/", views.busy),
]
