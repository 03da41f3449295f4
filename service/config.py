"""Which classifier, model and policy the engine runs with, from the environment or CLI flags.

    CODA_CLASSIFIER          rules (default) | openai-moderation | llama-guard
    CODA_CLASSIFIER_URL      base URL ending in /v1 (openai-moderation: api.openai.com by default;
                             llama-guard: required, an OpenAI-compatible server such as vLLM)
    CODA_CLASSIFIER_MODEL    the classifier's model name
    CODA_CLASSIFIER_TIMEOUT  seconds before a classification counts as `unknown` (default 2)
    CODA_MODEL               scripted (default) | anthropic | openai
    CODA_MODEL_NAME          e.g. claude-opus-4-1, gpt-4.1, llama3.1 (required for openai)
    CODA_MODEL_URL           the API's base URL (openai: ending in /v1, e.g. http://localhost:11434/v1)
    CODA_SCRIPTED_DELAY      seconds between the scripted model's deltas (default 0: demos, tests)
    CODA_LEASE_SECONDS       a generation's lease (default 30): how soon a dead owner's is closed
    CODA_POLICY_REDIRECTS    redirects before the warning (default 2)
    CODA_POLICY_WARNING      whether a warning must come before an end (default true)
    CODA_POLICY_SCOPE        branch (default) | thread: what an end closes
    CODA_POLICY_VERSION      the version recorded with the parameters (default 1)

API keys come from ANTHROPIC_API_KEY / OPENAI_API_KEY (and CODA_CLASSIFIER_API_KEY for the
classifier). docs/policy.md explains each choice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

import msgspec

from projections.policy import Policy, PolicyError
from service import anthropic, llama_guard, openai_chat, openai_moderation
from service.anthropic import AnthropicModel
from service.classifier import DEFAULT_TIMEOUT, Classifier, GuardedClassifier
from service.llama_guard import LlamaGuardClassifier
from service.model import Model, ModelError
from service.openai_chat import OpenAIChatModel
from service.openai_moderation import OpenAIModerationClassifier
from service.rules import RuleClassifier
from service.scripted import ScriptedModel

CLASSIFIERS: Final = ("rules", "openai-moderation", "llama-guard")
MODELS: Final = ("scripted", "anthropic", "openai")


class ConfigError(ValueError):
    """A setting that names nothing coda knows, or lacks what it needs."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    classifier: str = "rules"
    classifier_url: str | None = None
    classifier_model: str | None = None
    classifier_api_key: str | None = None
    classifier_timeout: float = DEFAULT_TIMEOUT
    model: str = "scripted"
    model_name: str | None = None
    model_url: str | None = None
    scripted_delay: float = 0.0
    lease_seconds: float = 30.0
    policy: Policy = Policy()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            classifier=env.get("CODA_CLASSIFIER", "rules"),
            classifier_url=env.get("CODA_CLASSIFIER_URL") or None,
            classifier_model=env.get("CODA_CLASSIFIER_MODEL") or None,
            classifier_api_key=env.get("CODA_CLASSIFIER_API_KEY") or None,
            classifier_timeout=_number(env, "CODA_CLASSIFIER_TIMEOUT", DEFAULT_TIMEOUT),
            model=env.get("CODA_MODEL", "scripted"),
            model_name=env.get("CODA_MODEL_NAME") or None,
            model_url=env.get("CODA_MODEL_URL") or None,
            scripted_delay=_number(env, "CODA_SCRIPTED_DELAY", 0.0, zero=True),
            lease_seconds=_number(env, "CODA_LEASE_SECONDS", 30.0),
            policy=_policy(env),
        )


def build_classifier(settings: Settings) -> Classifier:
    """The configured classifier, guarded: failures and timeouts give tier `unknown`."""
    return GuardedClassifier(_classifier(settings), timeout=settings.classifier_timeout)


def build_model(settings: Settings) -> Model:
    match settings.model:
        case "scripted":
            return ScriptedModel(delay=settings.scripted_delay)
        case "anthropic":
            try:
                return AnthropicModel(
                    settings.model_name or anthropic.DEFAULT_MODEL,
                    base_url=settings.model_url or anthropic.DEFAULT_BASE_URL,
                )
            except ModelError as exc:
                raise ConfigError(f"CODA_MODEL=anthropic: {exc}") from exc
        case "openai":
            if not settings.model_name:
                raise ConfigError("CODA_MODEL=openai needs CODA_MODEL_NAME (the model to ask)")
            return OpenAIChatModel(
                settings.model_name, base_url=settings.model_url or openai_chat.DEFAULT_BASE_URL
            )
    raise ConfigError(f"unknown model {settings.model!r}: use one of {', '.join(MODELS)}")


def _classifier(settings: Settings) -> Classifier:
    match settings.classifier:
        case "rules":
            return RuleClassifier()
        case "openai-moderation":
            return OpenAIModerationClassifier(
                settings.classifier_url or openai_moderation.DEFAULT_BASE_URL,
                api_key=settings.classifier_api_key,
                model=settings.classifier_model or openai_moderation.DEFAULT_MODEL,
            )
        case "llama-guard":
            if not settings.classifier_url:
                raise ConfigError("CODA_CLASSIFIER=llama-guard needs CODA_CLASSIFIER_URL")
            return LlamaGuardClassifier(
                settings.classifier_url,
                model=settings.classifier_model or llama_guard.DEFAULT_MODEL,
                api_key=settings.classifier_api_key,
            )
    raise ConfigError(
        f"unknown classifier {settings.classifier!r}: use one of {', '.join(CLASSIFIERS)}"
    )


def _number(env: Mapping[str, str], name: str, default: float, *, zero: bool = False) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {text!r}") from None
    if value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{name} must be positive, not {text!r}")
    return value


def _policy(env: Mapping[str, str]) -> Policy:
    params: dict[str, object] = {}
    if text := env.get("CODA_POLICY_REDIRECTS"):
        if not text.isdigit():
            raise ConfigError(f"CODA_POLICY_REDIRECTS must be a whole number, not {text!r}")
        params["redirects_before_warning"] = int(text)
    if text := env.get("CODA_POLICY_WARNING"):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"CODA_POLICY_WARNING must be true or false, not {text!r}")
        params["warning_required"] = text.lower() in ("true", "1", "yes")
    if text := env.get("CODA_POLICY_SCOPE"):
        params["end_scope"] = text
    if text := env.get("CODA_POLICY_VERSION"):
        params["version"] = text
    try:
        return msgspec.convert(params, Policy, strict=True)
    except (msgspec.ValidationError, PolicyError) as exc:
        raise ConfigError(f"policy settings: {exc}") from exc
