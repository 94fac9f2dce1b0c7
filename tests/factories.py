import factory
from django.contrib.auth import get_user_model

from billing_app import models


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"tenant{n}@example.com")
    email = factory.SelfAttribute("username")


class AccountKitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.AccountKit
        skip_postgeneration_save = True

    key = factory.Sequence(lambda n: f"kit-{n}")
    name = factory.LazyAttribute(lambda kit: kit.key.title())

    @factory.post_generation
    def allow(kit, create, extracted, **kwargs):
        """``AccountKitFactory(allow={"seo": None, "aeo": 60})``: primitives and rates."""
        for primitive, rate in (extracted or {}).items():
            models.KitPrimitive.objects.create(kit=kit, primitive=primitive, rate_per_minute=rate)


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Plan
        skip_postgeneration_save = True

    key = factory.Sequence(lambda n: f"plan-{n}")
    name = factory.LazyAttribute(lambda plan: plan.key.title())
    period = "month"

    @factory.post_generation
    def limits(plan, create, extracted, **kwargs):
        """``PlanFactory(limits={"seo": 10})``: the plan's quotas."""
        for primitive, limit in (extracted or {}).items():
            models.PlanQuota.objects.create(plan=plan, primitive=primitive, limit=limit)


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Subscription

    user = factory.SubFactory(UserFactory)
    plan = factory.SubFactory(PlanFactory)
    status = "active"
    status_changed_at = factory.Faker("date_time_this_year", tzinfo=__import__("datetime").UTC)
