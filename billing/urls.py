from django.urls import path

from . import views

app_name = "billing"
urlpatterns = [
    path("billing/", views.billing_page, name="page"),
    path("billing/ledger.csv", views.ledger_csv, name="ledger_csv"),
    path("billing/topup/", views.topup, name="topup"),
    path("billing/adjustment/", views.adjustment, name="adjustment"),
    path("billing/budgets/", views.budget, name="budget"),
    path("billing/timezone/", views.billing_timezone, name="timezone"),
    path("billing/prices/", views.prices, name="prices"),
    path("billing/prices/<int:price_id>/", views.price_edit, name="price_edit"),
    path("billing/prices/<int:price_id>/retire/", views.price_retire, name="price_retire"),
]
