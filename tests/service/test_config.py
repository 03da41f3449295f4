"""Choosing the classifier, model and policy from the environment."""

from __future__ import annotations

import pytest

from projections.policy import Policy
from service.anthropic import AnthropicModel
from service.classifier import GuardedClassifier
from service.config import ConfigError, Settings, build_classifier, build_model
from service.llama_guard import LlamaGuardClassifier
from service.openai_chat import OpenAIChatModel
from service.rules import RuleClassifier
from service.scripted import ScriptedModel

pytestmark = pytest.mark.anyio


def test_the_defaults_are_the_embedded_classifier_model_and_policy() -> None:
    settings = Settings.from_env({})
    classifier = build_classifier(settings)
    assert isinstance(classifier, GuardedClassifier)
    assert isinstance(classifier.inner, RuleClassifier)
    assert isinstance(build_model(settings), ScriptedModel)
    assert settings.policy == Policy()


def test_policy_parameters_come_from_the_environment() -> None:
    env = {
        "CODA_POLICY_REDIRECTS": "3",
        "CODA_POLICY_WARNING": "false",
        "CODA_POLICY_SCOPE": "thread",
        "CODA_POLICY_VERSION": "7",
    }
    policy = Settings.from_env(env).policy
    assert policy == Policy(
        version="7", redirects_before_warning=3, warning_required=False, end_scope="thread"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"CODA_POLICY_REDIRECTS": "two"}, "whole number", id="redirects"),
        pytest.param({"CODA_POLICY_WARNING": "maybe"}, "true or false", id="warning"),
        pytest.param({"CODA_POLICY_SCOPE": "galaxy"}, "policy settings", id="scope"),
        pytest.param({"CODA_CLASSIFIER_TIMEOUT": "-1"}, "positive", id="timeout"),
    ],
)
def test_a_bad_setting_is_a_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_an_unknown_classifier_or_model_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown classifier 'magic'"):
        build_classifier(Settings(classifier="magic"))
    with pytest.raises(ConfigError, match="unknown model 'oracle'"):
        build_model(Settings(model="oracle"))


async def test_real_services_are_built_from_their_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    guard = build_classifier(
        Settings.from_env(
            {"CODA_CLASSIFIER": "llama-guard", "CODA_CLASSIFIER_URL": "http://guard:8000/v1"}
        )
    )
    anthropic = build_model(Settings(model="anthropic", model_name="claude-opus-4-1"))
    openai = build_model(Settings(model="openai", model_name="llama3.1"))
    try:
        assert isinstance(guard, GuardedClassifier)
        assert isinstance(guard.inner, LlamaGuardClassifier)
        assert isinstance(anthropic, AnthropicModel)
        assert anthropic.name == "anthropic:claude-opus-4-1"
        assert isinstance(openai, OpenAIChatModel)
    finally:
        for closable in (guard, anthropic, openai):
            await closable.aclose()


def test_an_openai_model_needs_a_name() -> None:
    with pytest.raises(ConfigError, match="CODA_MODEL_NAME"):
        build_model(Settings(model="openai"))


def test_anthropic_without_a_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"CODA_MODEL=anthropic: .*ANTHROPIC_API_KEY"):
        build_model(Settings(model="anthropic"))
