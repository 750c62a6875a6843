"""Intake rules and job templates: what a GitHub event may start, read from ``github.intake``.

Everything a job runs comes from the configuration, never from text in GitHub. A *template*
(``github.intake.templates.<name>``) fixes the task type, argv, cwd, env and timeout; its named
*parameters* are the only thing an issue or a comment may fill, each checked against an allowed
list or a pattern::

    "templates": {
      "build":  {"type": "build",  "argv": ["make", "build"]},
      "test":   {"type": "test",   "argv": ["make", "test"], "timeout": 900},
      "deploy": {"type": "deploy", "argv": ["./deploy.sh", "{env}"], "environment": "{env}",
                 "params": {"env": {"allowed": ["staging", "production"]}}}
    },
    "rules": [
      {"on": "push", "branch": "main", "chain": ["build", "test"]},
      {"on": "issue_comment", "command": "/deploy", "template": "deploy", "params": ["env"]},
      {"on": "issue_comment", "command": "/run"},
      {"on": "label", "prefix": "sentinel:run-"}
    ]

* ``push`` to ``branch`` (a glob) → the templates of ``chain`` as a Celery chain, each linked to the
  pushed sha (its commit status, as for any job with ``sha=``);
* ``issue_comment`` whose first line starts with ``command`` → ``template`` with the words after the
  command as the listed ``params`` (or ``name=value``); without ``template`` the first word names one;
* ``label`` ``<prefix><template>`` added to an issue → that template with its defaults.

A deploy template's ``environment`` names the lease (``deploy:<env>``). The structure is validated when
the configuration loads (``config._validate_intake``: key and file in each error); here it becomes
:class:`Template` and :class:`Rule` objects, and a request's parameters are checked
(:meth:`Template.bind`).

Owns no Redis keys.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
MAX_PARAM_LENGTH = 100


class BadCommand(ValueError):
    """A command names a template or a parameter value the configuration does not allow."""


@dataclass(frozen=True)
class Param:
    name: str
    allowed: tuple[str, ...] | None = None
    pattern: str | None = None
    default: str | None = None

    def check(self, value: str) -> str:
        if len(value) > MAX_PARAM_LENGTH:
            raise BadCommand(f"parameter {self.name} is longer than {MAX_PARAM_LENGTH} characters")
        if self.allowed is not None and value not in self.allowed:
            raise BadCommand(f"parameter {self.name} must be one of {', '.join(self.allowed)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise BadCommand(f"parameter {self.name} does not match the configured pattern")
        return value


@dataclass(frozen=True)
class Template:
    name: str
    type: str
    argv: tuple[str, ...]
    task: str = ""
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    environment: str | None = None
    params: Mapping[str, Param] = field(default_factory=dict)

    @classmethod
    def from_config(cls, name: str, data: Mapping[str, Any]) -> "Template":
        params = {
            p: Param(p, tuple(spec["allowed"]) if "allowed" in spec else None, spec.get("pattern"),
                     spec.get("default"))
            for p, spec in (data.get("params") or {}).items()
        }
        return cls(name=name, type=data["type"], argv=tuple(data["argv"]),
                   task=data.get("task") or f"workers.{data['type']}.run", cwd=data.get("cwd"),
                   env=dict(data.get("env") or {}), timeout=data.get("timeout"),
                   environment=data.get("environment"), params=params)

    def bind(self, given: Mapping[str, str]) -> dict[str, str]:
        """The parameter values for one job: ``given`` checked, defaults filled; raises :class:`BadCommand`."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise BadCommand(f"template {self.name} has no parameter {unknown[0]}")
        values = {}
        for name, param in self.params.items():
            if name in given:
                values[name] = param.check(given[name])
            elif param.default is not None:
                values[name] = param.default
            else:
                raise BadCommand(f"template {self.name} needs parameter {name}")
        return values

    def kwargs(self, values: Mapping[str, str], *, github_issue: int | None = None,
               sha: str | None = None) -> dict[str, Any]:
        """The job's keyword arguments, placeholders filled from ``values`` (already bound)."""
        def fill(text: str) -> str:
            return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)

        out: dict[str, Any] = {"argv": [fill(a) for a in self.argv]}
        if self.cwd:
            out["cwd"] = fill(self.cwd)
        if self.env:
            out["env"] = {k: fill(v) for k, v in self.env.items()}
        if self.timeout:
            out["timeout"] = self.timeout
        if self.environment:
            out["environment"] = fill(self.environment)
        if github_issue is not None:
            out["github_issue"] = github_issue
        if sha is not None:
            out["sha"] = sha
        return out


@dataclass(frozen=True)
class Rule:
    on: str
    branch: str | None = None
    chain: tuple[str, ...] = ()
    command: str | None = None
    template: str | None = None
    params: tuple[str, ...] = ()
    prefix: str = "sentinel:run-"

    def matches_push(self, ref: str) -> bool:
        return self.on == "push" and ref.startswith("refs/heads/") and fnmatch.fnmatchcase(
            ref[len("refs/heads/"):], self.branch or "")

    def command_words(self, body: str) -> list[str] | None:
        """The words after this rule's command on the comment's first line, or None if it is not this command."""
        if self.on != "issue_comment" or not body:
            return None
        words = body.strip().splitlines()[0].split() if body.strip() else []
        if not words or words[0] != self.command:
            return None
        return words[1:]


@dataclass(frozen=True)
class Rules:
    templates: Mapping[str, Template]
    rules: tuple[Rule, ...]

    @classmethod
    def from_config(cls, intake: Mapping[str, Any]) -> "Rules":
        templates = {name: Template.from_config(name, spec) for name, spec in (intake.get("templates") or {}).items()}
        rules = tuple(
            Rule(on=r["on"], branch=r.get("branch"), chain=tuple(r.get("chain") or ()), command=r.get("command"),
                 template=r.get("template"), params=tuple(r.get("params") or ()),
                 prefix=r.get("prefix") or "sentinel:run-")
            for r in intake.get("rules") or ()
        )
        return cls(templates, rules)

    def template(self, name: str) -> Template:
        found = self.templates.get(name)
        if found is None:
            raise BadCommand(f"no template {name!r} in github.intake.templates")
        return found

    def push_rules(self, ref: str) -> list[Rule]:
        return [r for r in self.rules if r.matches_push(ref)]

    def comment_command(self, body: str) -> tuple[Rule, list[str]] | None:
        for rule in self.rules:
            words = rule.command_words(body)
            if words is not None:
                return rule, words
        return None

    def label_template(self, label: str) -> tuple[Rule, str] | None:
        """The rule and template name a label asks for (``sentinel:run-<template>``), or None."""
        for rule in self.rules:
            if rule.on == "label" and label.startswith(rule.prefix) and len(label) > len(rule.prefix):
                return rule, label[len(rule.prefix):]
        return None

    def parse_command(self, rule: Rule, words: list[str]) -> tuple[Template, dict[str, str]]:
        """A comment command's template and bound parameters; raises :class:`BadCommand`."""
        if rule.template is None:
            if not words:
                raise BadCommand(f"{rule.command} needs a template name")
            name, words = words[0], words[1:]
        else:
            name = rule.template
        template = self.template(name)
        given: dict[str, str] = {}
        positional = list(rule.params)
        for word in words:
            key, eq, value = word.partition("=")
            if eq:
                given[key] = value
            elif positional:
                given[positional.pop(0)] = word
            else:
                raise BadCommand(f"unexpected word after {rule.command}; use name=value")
        return template, template.bind(given)
