"""/accounts/: Django's own login and logout (POST only) for merchant users, with our
templates. Staff may use it too; the admin keeps its own login at /admin/login/."""

from django.contrib.auth import views as auth_views
from django.urls import path

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="registration/login.html",
                                                redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
