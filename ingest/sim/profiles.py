"""The four agent types' models, tools and behaviour, and the fleet of agents made from them."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Final

from agentwatch.ingest.sim.parameters import (
    AGENT_TYPES,
    Agent,
    AgentParameters,
    IntentSpec,
    LogNormal,
    Mix,
    ModelSpec,
    PolicySpec,
    ToolSpec,
)

# --------------------------------------------------------------------------- catalog

_MODELS: Final = {
    m.name: m
    for m in (
        ModelSpec("gpt-4o-mini", "openai", LogNormal(380, 0.35), 9.0, 0.15, 0.60, 0.075),
        ModelSpec("gpt-4o", "openai", LogNormal(520, 0.35), 16.0, 2.50, 10.0, 1.25),
        ModelSpec("claude-3-5-sonnet", "anthropic", LogNormal(700, 0.3), 15.0, 3.0, 15.0, 0.30),
        ModelSpec("claude-3-5-haiku", "anthropic", LogNormal(420, 0.3), 10.0, 0.80, 4.0, 0.08),
        ModelSpec("gemini-1.5-flash", "google", LogNormal(330, 0.4), 6.5, 0.075, 0.30, 0.01875),
        ModelSpec(
            "o3-mini", "openai", LogNormal(900, 0.4), 8.0, 1.10, 4.40, 0.55,
            reasoning_tokens=LogNormal(600, 0.6),
        ),
    )
}  # fmt: skip


# The catalogs agents draw from, by name: a scenario swaps in a model or adds a tool from here.
MODELS: Final[Mapping[str, ModelSpec]] = MappingProxyType(_MODELS)


def _tool(
    name: str, median_ms: float, sigma: float = 0.5, failure: float = 0.01, kind: str = "function"
) -> ToolSpec:
    return ToolSpec(name, LogNormal(median_ms, sigma), tool_type=kind, failure_rate=failure)


_TOOLS: Final = {
    t.name: t
    for t in (
        # HR
        _tool("workday.get_payslip", 320),
        _tool("workday.get_leave_balance", 240),
        _tool("workday.request_leave", 480, failure=0.02),
        _tool("workday.get_tax_documents", 650, sigma=0.6),
        _tool("benefits.search_plans", 410),
        _tool("kb.search_hr_policies", 180, sigma=0.4, kind="datastore"),
        # IT
        _tool("okta.get_user", 150, sigma=0.4),
        _tool("okta.reset_password", 420, failure=0.015),
        _tool("okta.reset_mfa", 460, failure=0.015),
        _tool("okta.assign_app", 530, failure=0.02),
        _tool("intune.get_device", 610, sigma=0.6, failure=0.02),
        _tool("netops.check_vpn_status", 900, sigma=0.7, failure=0.03),
        _tool("servicenow.create_ticket", 720, sigma=0.5, failure=0.015),
        _tool("kb.search_it", 170, sigma=0.4, kind="datastore"),
        # finance and compliance
        _tool("concur.get_expense_report", 560, sigma=0.5),
        _tool("policy.lookup_expense_rules", 200, sigma=0.4, kind="datastore"),
        _tool("policy.search", 210, sigma=0.4, kind="datastore"),
        _tool("sap.get_invoice", 780, sigma=0.6, failure=0.02),
        _tool("sap.check_vendor", 690, sigma=0.6, failure=0.02),
        _tool("sap.approve_invoice", 950, sigma=0.5, failure=0.02),
        _tool("sanctions.screen_vendor", 1300, sigma=0.7, failure=0.03),
        # member services
        _tool("crm.get_account", 260),
        _tool("crm.update_contact", 380, failure=0.015),
        _tool("billing.get_balance", 300),
        _tool("billing.get_invoice", 340),
        _tool("billing.open_dispute", 620, failure=0.02),
        _tool("billing.create_payment_plan", 700, failure=0.02),
        _tool("retention.get_offers", 280),
        _tool("kb.search_member_faq", 160, sigma=0.4, kind="datastore"),
    )
}

TOOLS: Final[Mapping[str, ToolSpec]] = MappingProxyType(_TOOLS)

_SHORT: Final = Mix.of([(1, 0.55), (2, 0.3), (3, 0.15)])
_MEDIUM: Final = Mix.of([(1, 0.35), (2, 0.4), (3, 0.2), (4, 0.05)])
_LONG: Final = Mix.of([(2, 0.4), (3, 0.35), (4, 0.25)])


def _models(*pairs: tuple[str, float]) -> Mix[ModelSpec]:
    return Mix.of((_MODELS[name], w) for name, w in pairs)


def _tools_for(intents: Mix[IntentSpec], extra: Sequence[str] = ()) -> dict[str, ToolSpec]:
    names = {t for i in intents.items for t in i.tools} | set(extra)
    return {n: _TOOLS[n] for n in sorted(names)}


def _pii(rate: float) -> PolicySpec:
    return PolicySpec("pii-output", "output", "high", rate, block_share=0.35)


def _allowlist(rate: float) -> PolicySpec:
    return PolicySpec("tool-allowlist", "tool", "critical", rate, block_share=0.9)


def _hr() -> AgentParameters:
    intents = Mix.of([
        (IntentSpec("payslip", ("workday.get_payslip",), _SHORT), 0.34),
        (IntentSpec("leave_request",
                    ("workday.get_leave_balance", "workday.request_leave"), _MEDIUM), 0.26),
        (IntentSpec("benefits", ("benefits.search_plans", "kb.search_hr_policies"), _MEDIUM,
                    escalation_factor=1.4), 0.2),
        (IntentSpec("tax_forms", ("workday.get_tax_documents",), _SHORT), 0.08),
        (IntentSpec("policy_question", ("kb.search_hr_policies",), _SHORT), 0.12),
    ])  # fmt: skip
    return AgentParameters(
        agent_version="2.3.0",
        prompt_id="hr-main",
        prompt_version="v7",
        models=_models(("gpt-4o-mini", 0.6), ("gpt-4o", 0.25), ("claude-3-5-haiku", 0.15)),
        intents=intents,
        tools=_tools_for(intents),
        policies=(
            PolicySpec("prompt-guard", "input", "high", 0.004, block_share=0.6),
            _allowlist(0.002),
            _pii(0.02),
            PolicySpec(
                "hr-confidentiality",
                "output",
                "medium",
                0.012,
                block_share=0.25,
                latency_ms=LogNormal(350.0, 0.4),
                sample_rate=0.4,
            ),
        ),
        channels=Mix.of([("teams", 0.5), ("slack", 0.3), ("web", 0.2)]),
        user_segments=Mix.of([("employee", 0.8), ("manager", 0.15), ("contractor", 0.05)]),
        escalation_targets=Mix.of(
            [("hr-service-desk", 0.6), ("payroll-team", 0.25), ("hr-benefits-team", 0.15)]
        ),
        escalation_rate=0.10,
        abandon_rate=0.06,
        satisfaction=0.88,
    )


def _it() -> AgentParameters:
    intents = Mix.of([
        (IntentSpec("password_reset", ("okta.get_user", "okta.reset_password"), _SHORT), 0.32),
        (IntentSpec("vpn_issue", ("kb.search_it", "netops.check_vpn_status"), _MEDIUM,
                    escalation_factor=1.5), 0.2),
        (IntentSpec("laptop_issue", ("intune.get_device", "servicenow.create_ticket"), _MEDIUM,
                    escalation_factor=1.8), 0.18),
        (IntentSpec("software_access", ("okta.assign_app", "servicenow.create_ticket"), _MEDIUM),
         0.18),
        (IntentSpec("mfa_reset", ("okta.get_user", "okta.reset_mfa"), _SHORT), 0.12),
    ])  # fmt: skip
    return AgentParameters(
        agent_version="1.0.4",
        prompt_id="it-triage",
        prompt_version="v12",
        models=_models(
            ("gpt-4o-mini", 0.45),
            ("claude-3-5-haiku", 0.25),
            ("claude-3-5-sonnet", 0.2),
            ("gemini-1.5-flash", 0.1),
        ),
        intents=intents,
        tools=_tools_for(intents),
        policies=(
            PolicySpec("prompt-guard", "input", "high", 0.008, block_share=0.6),
            _allowlist(0.004),
            PolicySpec(
                "privileged-action-approval",
                "tool",
                "high",
                0.02,
                block_share=0.5,
                tools=("okta.reset_password", "okta.reset_mfa", "okta.assign_app"),
            ),
            _pii(0.01),
        ),
        channels=Mix.of([("slack", 0.45), ("teams", 0.35), ("web", 0.15), ("email", 0.05)]),
        user_segments=Mix.of([("employee", 0.85), ("contractor", 0.1), ("executive", 0.05)]),
        escalation_targets=Mix.of(
            [("it-helpdesk-l1", 0.6), ("it-helpdesk-l2", 0.3), ("security-operations", 0.1)]
        ),
        escalation_rate=0.14,
        abandon_rate=0.07,
        security_rate=0.015,
        satisfaction=0.82,
    )


def _finance() -> AgentParameters:
    intents = Mix.of([
        (IntentSpec("expense_check",
                    ("concur.get_expense_report", "policy.lookup_expense_rules"), _MEDIUM), 0.38),
        (IntentSpec("invoice_approval",
                    ("sap.get_invoice", "sap.check_vendor", "sap.approve_invoice"), _LONG,
                    escalation_factor=1.6), 0.27),
        (IntentSpec("policy_lookup", ("policy.search",), _SHORT), 0.22),
        (IntentSpec("vendor_due_diligence", ("sanctions.screen_vendor", "sap.check_vendor"),
                    _MEDIUM, escalation_factor=2.0), 0.13),
    ])  # fmt: skip
    return AgentParameters(
        agent_version="0.9.2",
        prompt_id="fin-compliance",
        prompt_version="v3",
        models=_models(
            ("gpt-4o", 0.4), ("claude-3-5-sonnet", 0.35), ("gpt-4o-mini", 0.15), ("o3-mini", 0.1)
        ),
        intents=intents,
        tools=_tools_for(intents),
        policies=(
            _allowlist(0.003),
            PolicySpec(
                "segregation-of-duties",
                "tool",
                "high",
                0.03,
                block_share=0.7,
                tools=("sap.approve_invoice",),
            ),
            PolicySpec(
                "approval-limit",
                "tool",
                "critical",
                0.02,
                block_share=0.95,
                tools=("sap.approve_invoice",),
            ),
            PolicySpec(
                "financial-advice",
                "output",
                "medium",
                0.015,
                block_share=0.3,
                latency_ms=LogNormal(380.0, 0.4),
                sample_rate=0.6,
            ),
            _pii(0.01),
        ),
        channels=Mix.of([("web", 0.5), ("teams", 0.4), ("email", 0.1)]),
        user_segments=Mix.of([("employee", 0.55), ("approver", 0.3), ("auditor", 0.15)]),
        escalation_targets=Mix.of(
            [("finance-controllers", 0.45), ("accounts-payable", 0.35), ("compliance-office", 0.2)]
        ),
        system_prompt_tokens=LogNormal(2400.0, 0.15),
        turn_input_tokens=LogNormal(260.0, 0.8),
        output_tokens=LogNormal(320.0, 0.5),
        think_time_s=LogNormal(14.0, 0.6),
        escalation_rate=0.16,
        abandon_rate=0.04,
        failure_rate=0.025,
        satisfaction=0.8,
        cost_reported_rate=0.25,
    )


def _member() -> AgentParameters:
    intents = Mix.of([
        (IntentSpec("balance_inquiry", ("crm.get_account", "billing.get_balance"), _SHORT), 0.32),
        (IntentSpec("billing_dispute", ("billing.get_invoice", "billing.open_dispute"), _MEDIUM,
                    escalation_factor=1.7), 0.2),
        (IntentSpec("update_details", ("crm.get_account", "crm.update_contact"), _SHORT), 0.18),
        (IntentSpec("cancel_membership", ("crm.get_account", "retention.get_offers"), _MEDIUM,
                    escalation_factor=1.5), 0.12),
        (IntentSpec("payment_plan", ("billing.get_balance", "billing.create_payment_plan"),
                    _MEDIUM), 0.1),
        (IntentSpec("faq", ("kb.search_member_faq",), _SHORT, escalation_factor=0.5), 0.08),
    ])  # fmt: skip
    return AgentParameters(
        agent_version="3.1.1",
        prompt_id="member-care",
        prompt_version="v21",
        models=_models(("gpt-4o-mini", 0.5), ("gemini-1.5-flash", 0.3), ("claude-3-5-haiku", 0.2)),
        intents=intents,
        tools=_tools_for(intents),
        policies=(
            PolicySpec("prompt-guard", "input", "high", 0.006, block_share=0.6),
            PolicySpec(
                "account-verification",
                "tool",
                "high",
                0.015,
                block_share=0.8,
                tools=("crm.update_contact", "billing.open_dispute", "billing.create_payment_plan"),
            ),
            _pii(0.015),
            PolicySpec(
                "financial-advice",
                "output",
                "medium",
                0.01,
                block_share=0.3,
                latency_ms=LogNormal(380.0, 0.4),
                sample_rate=0.3,
            ),
            PolicySpec(
                "tone-and-brand",
                "output",
                "low",
                0.02,
                block_share=0.05,
                latency_ms=LogNormal(300.0, 0.4),
                sample_rate=0.2,
            ),
        ),
        channels=Mix.of([("web", 0.45), ("mobile", 0.35), ("voice", 0.15), ("email", 0.05)]),
        user_segments=Mix.of([("standard", 0.7), ("premium", 0.22), ("new", 0.08)]),
        escalation_targets=Mix.of(
            [("member-care-l1", 0.55), ("billing-specialists", 0.3), ("retention-team", 0.15)]
        ),
        think_time_s=LogNormal(7.0, 0.6),
        escalation_rate=0.11,
        abandon_rate=0.1,
        security_rate=0.01,
        satisfaction=0.78,
    )


PROFILES: Final[Mapping[str, Callable[[], AgentParameters]]] = {
    "hr-assistant": _hr,
    "it-support": _it,
    "finance-compliance": _finance,
    "member-services": _member,
}


def _previous_version(version: str) -> str:
    major, minor, patch = (int(x) for x in version.split("."))
    return f"{major}.{minor}.{patch - 1}" if patch else f"{major}.{max(minor - 1, 0)}.9"


def make_agents(count: int, seed: int = 0) -> list[Agent]:
    """``count`` agents cycling through the agent types: hr-assistant-1, it-support-1, ...

    The first agent of each type runs in prod on the current version; later ones are mostly
    prod too, with a few in staging or test, some on the previous version, and uneven
    traffic, as a real fleet is.
    """
    if count < 1:
        raise ValueError("a fleet needs at least one agent")
    rng = random.Random(f"{seed}/agents")
    agents: list[Agent] = []
    for n in range(count):
        agent_type = AGENT_TYPES[n % len(AGENT_TYPES)]
        index = n // len(AGENT_TYPES) + 1
        params = PROFILES[agent_type]()
        environment = "prod"
        if index > 1:
            environment = Mix.of([("prod", 0.75), ("staging", 0.15), ("test", 0.1)]).pick(rng)
            if rng.random() < 0.3:  # not yet upgraded: the previous release and its prompt
                params = replace(
                    params,
                    agent_version=_previous_version(params.agent_version),
                    prompt_version=f"v{int(params.prompt_version[1:]) - 1}",
                )
        weight = LogNormal(1.0, 0.35).sample(rng) * (1.0 if environment == "prod" else 0.15)
        agents.append(Agent(f"{agent_type}-{index}", agent_type, environment, weight, params))
    return agents
