"""What a tool is: a function, the schema the model sees, and how its arguments are read.

Schemas come from pydantic: the signature becomes a model whose JSON schema is ``parameters``
and which validates the arguments; strict schemas reuse the SDK's ``to_strict_json_schema``.
Answering calls is :mod:`runfleet.tools.registry`'s.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, ParamSpec, TypeVar, cast, overload

import pydantic
from openai.lib._pydantic import to_strict_json_schema
from openai.types.beta import FunctionToolParam as AssistantsToolDefinition
from openai.types.responses import FunctionToolParam as ResponsesToolDefinition
from openai.types.shared_params import FunctionDefinition

__all__ = ["Tool", "ToolKind", "tool"]

P = ParamSpec("P")
R = TypeVar("R")

ToolKind = Literal["responses", "assistants"]

# OpenAI's rule for function names; checked when the tool is made, not at the first 400.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# eq=False: tools compare and hash by identity, and `parameters` (a dict) stays unhashed.
@dataclass(frozen=True, eq=False)
class Tool(Generic[P, R]):
    """A handler with the schema the model sees; call it like the function it wraps.

    Make one with :func:`tool`, not directly.
    """

    fn: Callable[P, R]
    name: str
    description: str
    parameters: dict[str, Any] = field(repr=False)
    strict: bool
    timeout: float | None
    arguments_model: type[pydantic.BaseModel] = field(repr=False)
    # (model field, parameter name, whether the function has its own default)
    _fields: tuple[tuple[str, str, bool], ...] = field(repr=False)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    @property
    def is_async(self) -> bool:
        """Tell whether the handler runs on the event loop rather than in a worker thread."""
        return inspect.iscoroutinefunction(self.fn)

    @overload
    def definition(self, kind: Literal["responses"]) -> ResponsesToolDefinition: ...
    @overload
    def definition(self, kind: Literal["assistants"]) -> AssistantsToolDefinition: ...
    def definition(self, kind: ToolKind) -> ResponsesToolDefinition | AssistantsToolDefinition:
        """Return the tool definition in the wire shape of ``kind``.

        Raises:
            ValueError: ``kind`` is neither ``"responses"`` nor ``"assistants"``.
        """
        function: FunctionDefinition = {
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(self.parameters),  # callers may mutate what they send
            "strict": self.strict,
        }
        if kind == "responses":
            return cast(ResponsesToolDefinition, {"type": "function", **function})
        if kind == "assistants":
            return {"type": "function", "function": function}
        raise ValueError(f"kind must be 'responses' or 'assistants', not {kind!r}")

    def parse_arguments(self, raw: str) -> dict[str, Any]:
        """Turn the model's JSON arguments into keyword arguments for the function.

        Parameters the model left out that have defaults are left out too: the function owns
        its defaults.

        Raises:
            ValueError: the arguments are not JSON, not an object, or do not fit the
                signature; the message (without the inputs) reads after "tool 'name' ".
        """
        try:
            # Some compatible servers send "" for a function without parameters.
            data = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"got arguments that are not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise ValueError(f"got arguments that are not a JSON object but a {kind}")
        try:
            parsed = self.arguments_model.model_validate(data)
        except pydantic.ValidationError as exc:
            # Without the inputs: they may hold user data, and the model has them already.
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'arguments'}: {err['msg']}"
                for err in exc.errors(include_url=False, include_input=False)
            )
            raise ValueError(f"got invalid arguments: {problems}") from None
        return {
            name: getattr(parsed, attr)
            for attr, name, has_default in self._fields
            if attr in parsed.model_fields_set or not has_default
        }


@overload
def tool(fn: Callable[P, R], /) -> Tool[P, R]: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    strict: bool = False,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...
def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    strict: bool = False,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Make a function (async, or sync to run in a worker thread) a tool the model can call.

    Every parameter needs a type annotation pydantic understands; document one with
    ``Annotated[str, pydantic.Field(description=...)]``.

    Args:
        name: the function name the model sees (default: the function's ``__name__``).
        description: what the model reads to choose the tool (default: the docstring).
        timeout: seconds one call may take (default: the registry's timeout).
        strict: have the platform guarantee arguments match the schema; every parameter is
            then required (defaults become hints) and ``dict[str, X]`` is refused.

    Raises:
        TypeError: a parameter is variadic, positional-only or unannotated, or (strict) a
            mapping strict mode cannot describe.
        ValueError: the name breaks OpenAI's rule or the timeout is not positive.

    Example::

        @tool
        async def get_weather(city: str, unit: str = "C") -> str:
            \"\"\"Current weather for a city.\"\"\"
    """

    def make(fn: Callable[P, R]) -> Tool[P, R]:
        return _make_tool(fn, name=name, description=description, timeout=timeout, strict=strict)

    return make if fn is None else make(fn)


def _make_tool(
    fn: Callable[P, R],
    *,
    name: str | None,
    description: str | None,
    timeout: float | None,
    strict: bool,
) -> Tool[P, R]:
    """Build the arguments model and schema from ``fn``'s signature."""
    if isinstance(fn, Tool):
        raise TypeError(f"{fn.name!r} is already a tool")
    name = name if name is not None else getattr(fn, "__name__", "")
    if not _NAME.fullmatch(name):
        raise ValueError(f"tool name {name!r} must be 1-64 of a-z, A-Z, 0-9, '_' or '-'")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be positive or None, not {timeout!r}")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # NameError for a type only defined in a local scope
        raise TypeError(f"cannot resolve the type hints of tool {name!r}: {exc}") from exc
    fields: dict[str, Any] = {}
    mapping: list[tuple[str, str, bool]] = []
    for index, param in enumerate(inspect.signature(fn).parameters.values()):
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            raise TypeError(f"tool {name!r}: parameter {param.name!r} must be a keyword parameter")
        if param.name not in hints:
            raise TypeError(f"tool {name!r}: parameter {param.name!r} needs a type annotation")
        has_default = param.default is not param.empty
        # Neutral field names with the parameter as alias, so a parameter called `json` or
        # `model_x` neither shadows BaseModel attributes nor trips pydantic's namespaces.
        attr = f"p{index}"
        default = param.default if has_default else ...
        fields[attr] = (hints[param.name], pydantic.Field(default, alias=param.name))
        mapping.append((attr, param.name, has_default))
    model = pydantic.create_model(name, __config__=pydantic.ConfigDict(extra="forbid"), **fields)
    schema = _strict_schema(model, name) if strict else model.model_json_schema()
    return Tool(
        fn=fn,
        name=name,
        description=description if description is not None else inspect.getdoc(fn) or "",
        parameters=schema,
        strict=strict,
        timeout=timeout,
        arguments_model=model,
        _fields=tuple(mapping),
    )


def _strict_schema(model: type[pydantic.BaseModel], name: str) -> dict[str, Any]:
    """Return the SDK's strict schema, without the keywords strict mode refuses."""
    schema = to_strict_json_schema(model)

    def visit(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        # Some servers answer 400 "'default' is not permitted"; keep it as a hint instead.
        if "default" in node:
            default = node.pop("default")
            hint = f"Default: {json.dumps(default)}."
            node["description"] = f"{node['description']} {hint}" if "description" in node else hint
        if node.get("type") == "object" and node.get("additionalProperties") is not False:
            raise TypeError(f"tool {name!r}: strict mode cannot describe the mapping at {path}")
        for key in ("properties", "$defs"):
            for child_name, child in node.get(key, {}).items():
                visit(child, f"{path}.{child_name}")
        for key in ("anyOf", "allOf", "prefixItems"):
            for child in node.get(key, []):
                visit(child, path)
        visit(node.get("items"), f"{path}[]")

    visit(schema, "arguments")
    return schema
