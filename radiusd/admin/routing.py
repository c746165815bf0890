"""Routing plans: ordered rules sending calls by destination prefix to terminator accounts."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radiusd.admin import audit
from radiusd.admin import fields as F
from radiusd.admin.refs import find, name_of, refuse_if_used
from radiusd.models import Account, Client, RoutingPlan, RoutingRule

# How each column's value is checked, from the CLI, the web, the API and seed files alike.
PLAN_COLUMN_RULES = {"name": lambda field, value: F.name(field, value, spaces=False), "notes": F.notes}
RULE_COLUMN_RULES = {
    "priority": lambda field, value: F.integer(field, value, minimum=0),
    "prefix": F.digits_prefix,
    "share": lambda field, value: F.integer(field, value, minimum=0, maximum=100),
}


def rule_record(session: Session, rule: RoutingRule) -> dict:
    return {"id": rule.id, "priority": rule.priority, "prefix": rule.prefix,
            "terminator": name_of(session, Account, rule.terminator_account_id), "share": rule.share}


def plan_record(plan: RoutingPlan, rule_count: int | None = None) -> dict:
    record = {"id": plan.id, "name": plan.name, "notes": plan.notes}
    if rule_count is not None:
        record["rules"] = rule_count
    return record


def create_routing_plan(session: Session, *, actor: str, context: str = "cli", name, notes: str = "") -> dict:
    name = PLAN_COLUMN_RULES["name"]("name", name)
    if session.scalars(select(RoutingPlan).where(RoutingPlan.name == name)).first() is not None:
        raise F.conflict("name", "a routing plan with this name exists", name)
    plan = RoutingPlan(name=name, notes=PLAN_COLUMN_RULES["notes"]("notes", notes), created_at=audit.utcnow())
    session.add(plan)
    session.flush()
    record = plan_record(plan)
    audit.record(session, object_type="routing_plan", object_id=plan.id, object_name=plan.name, action="create",
                 actor=actor, context=context, changes=audit.diff({}, record))
    return record


def add_rule(session: Session, plan_ref, *, actor: str, context: str = "cli", terminator, prefix="",
             priority=0, share=100) -> dict:
    """Append a rule: calls to `prefix` ('' = any) go to the terminator account."""
    plan = find(session, RoutingPlan, plan_ref, "routing_plan")
    account = find(session, Account, terminator, "terminator")
    rule = RoutingRule(routing_plan_id=plan.id, priority=RULE_COLUMN_RULES["priority"]("priority", priority),
                       prefix=RULE_COLUMN_RULES["prefix"]("prefix", prefix), terminator_account_id=account.id,
                       share=RULE_COLUMN_RULES["share"]("share", share))
    session.add(rule)
    session.flush()
    record = rule_record(session, rule)
    audit.record(session, object_type="routing_plan", object_id=plan.id, object_name=plan.name, action="rule-add",
                 actor=actor, context=context, changes={f"rule #{rule.id}": [None, record]})
    return {"routing_plan": plan.name, **record}


def show_routing_plan(session: Session, ref) -> dict:
    plan = find(session, RoutingPlan, ref, "routing_plan")
    rules = session.scalars(select(RoutingRule).where(RoutingRule.routing_plan_id == plan.id)
                            .order_by(RoutingRule.priority, RoutingRule.id)).all()
    record = plan_record(plan, len(rules))
    record["rule_list"] = [rule_record(session, r) for r in rules]
    return record


def list_routing_plans(session: Session) -> list[dict]:
    counts = dict(session.execute(
        select(RoutingRule.routing_plan_id, func.count()).group_by(RoutingRule.routing_plan_id)).all())
    return [plan_record(p, counts.get(p.id, 0)) for p in session.scalars(select(RoutingPlan).order_by(RoutingPlan.id))]


def delete_rule(session: Session, plan_ref, rule_id, *, actor: str, context: str = "cli") -> dict:
    """Remove one rule (its id as `routing show` lists it) from a plan."""
    plan = find(session, RoutingPlan, plan_ref, "routing_plan")
    number = F.integer("rule", str(rule_id).lstrip("#"), minimum=1)
    rule = session.scalars(select(RoutingRule).where(RoutingRule.id == number,
                                                     RoutingRule.routing_plan_id == plan.id)).first()
    if rule is None:
        raise F.fail("rule", f"routing plan {plan.name} has no rule with this id (see `routing show`)", rule_id)
    prior = rule_record(session, rule)
    session.delete(rule)
    session.flush()
    audit.record(session, object_type="routing_plan", object_id=plan.id, object_name=plan.name,
                 action="rule-delete", actor=actor, context=context, changes={f"rule #{number}": [prior, None]})
    return {"routing_plan": plan.name, "deleted": prior}


def delete_routing_plan(session: Session, ref, *, actor: str, context: str = "cli") -> dict:
    """Delete a plan and its rules; refused while a client or an account routes by it."""
    plan = find(session, RoutingPlan, ref, "routing_plan", lock=True)
    refuse_if_used("routing_plan", plan.name, [
        ("client", list(session.scalars(select(Client.name).where(Client.routing_plan_id == plan.id)
                                        .order_by(Client.id)))),
        ("account", list(session.scalars(select(Account.name).where(Account.orig_routing_plan_id == plan.id)
                                         .order_by(Account.id)))),
    ], "give them another plan (or none) first")
    prior = show_routing_plan(session, plan)
    session.delete(plan)
    session.flush()
    audit.record(session, object_type="routing_plan", object_id=prior["id"], object_name=prior["name"],
                 action="delete", actor=actor, context=context, changes=audit.diff(prior, {}))
    return {"routing_plan": prior["name"], "id": prior["id"], "rules_deleted": prior["rules"]}
