import factory
from django.contrib.auth import get_user_model

from billing_app import models
from billing_app.conf import customer_is_user, customer_model


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}@example.com")
    email = factory.SelfAttribute("username")


def CustomerFactory(**fields):
    """A customer of whatever model the settings bill: a user, or an organisation."""
    if customer_is_user():
        return UserFactory(**fields)
    Organization = customer_model()
    count = Organization._default_manager.count()
    fields.setdefault("name", f"Org {count}")
    fields.setdefault("email", f"billing{count}@example.com")
    return Organization._default_manager.create(**fields)


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
