"""The appliance configuration: schema, loading, validation and masking.

One YAML file describes an appliance. Every key has a default for the
reference box (4x A100 80GB serving DeepSeek-R1-Distill-Llama-70B), so an
empty file, or none at all, is a valid configuration. Validation happens
before any host is touched, and every problem is reported with its key, the
value found and what to write instead.
"""

from __future__ import annotations

import difflib
import ipaddress
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlparse, urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from oneclick.errors import ConfigError
from oneclick.i18n import _

MASK = "********"

SourceMode = Literal["upstream", "mirror", "local"]


class _Section(BaseModel):
    """Base of every section: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


def _check_absolute(value: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise ValueError(_("must be an absolute path starting with '/'"))
    return value


def _check_http_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(_("must be an http:// or https:// URL"))
    return value


# model.id value that lets preflight pick the catalogue model that best fits the GPUs found.
AUTO_MODEL = "auto"


class ModelSection(_Section):
    """The model to serve and how the engine runs it."""

    # "auto": the best-fitting model of oneclick's catalogue for the GPUs found.
    id: str = Field("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", min_length=1)
    served_name: str = Field("deepseek-r1-distill-llama-70b", min_length=1, pattern=r"^\S+$")
    weights_path: str = "/srv/oneclick/models/DeepSeek-R1-Distill-Llama-70B"
    tensor_parallel_size: int = Field(4, ge=1, le=64)
    max_model_len: int = Field(32768, ge=256, le=1048576)
    gpu_memory_utilization: float = Field(0.90, gt=0.0, le=0.99)
    extra_args: list[str] = Field(default_factory=list)
    # None: the quantization of the weights model.id names, BF16 for a base model.
    quantization: Literal["bf16", "awq", "int8", "fp8"] | None = None
    # Check the model against oneclick's model catalogue and the GPUs found.
    check_fit: bool = True

    @field_validator("weights_path")
    @classmethod
    def _weights_path_absolute(cls, value: str) -> str:
        return _check_absolute(value)

    @field_validator("gpu_memory_utilization", mode="before")
    @classmethod
    def _accept_int_utilization(cls, value: Any) -> Any:
        # YAML reads "1" as an int; strict mode would reject it as a float.
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


class EngineSection(_Section):
    """The serving container."""

    # None selects the engine image pinned in the inference role's defaults,
    # the one place where the engine version is set.
    image: str | None = Field(None, min_length=1, pattern=r"^\S+$")
    env: dict[str, str] = Field(default_factory=dict)
    ready_timeout: int = Field(1800, ge=10, le=14400)


class ApiSection(_Section):
    """The OpenAI-compatible endpoint."""

    bind_address: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    key: SecretStr | None = None
    key_file: str = "/etc/oneclick/api-key"

    @field_validator("bind_address")
    @classmethod
    def _bind_address_ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError as error:
            raise ValueError(_("must be an IP address such as 127.0.0.1 or 0.0.0.0")) from error
        return value

    @field_validator("key_file")
    @classmethod
    def _key_file_absolute(cls, value: str) -> str:
        return _check_absolute(value)

    @field_validator("key", mode="before")
    @classmethod
    def _key_long_enough(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value) < 16:
            raise ValueError(_("must be at least 16 characters long, or left out to generate one"))
        return value


class GpuSection(_Section):
    """The GPUs the appliance is expected to have."""

    required: bool = True
    count: int = Field(4, ge=1, le=16)


class SourceSection(_Section):
    """Source of one kind of artifact."""

    mode: SourceMode = "upstream"
    mirror_url: str | None = None
    local_path: str | None = None

    @field_validator("local_path")
    @classmethod
    def _local_path_absolute(cls, value: str | None) -> str | None:
        return None if value is None else _check_absolute(value)


class PackageSource(SourceSection):
    """APT packages: the host's sources, a mirror of vendor repositories, or a local repository."""

    @field_validator("mirror_url")
    @classmethod
    def _mirror_is_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)


class ImageSource(SourceSection):
    """Container images: their registry, a registry mirror, or archives on disk."""

    @field_validator("mirror_url")
    @classmethod
    def _mirror_is_registry(cls, value: str | None) -> str | None:
        if value is not None and ("://" in value or not value.strip("/") or " " in value):
            raise ValueError(_("must be a registry host with an optional path, without a scheme"))
        return value


PackageRole = Literal[
    "docker", "nvidia_driver", "nvidia_container_toolkit", "monitoring", "grafana"
]


class SourcesSection(_Section):
    """Sources for packages and images."""

    packages: PackageSource = Field(default_factory=PackageSource)
    # Per-role exceptions to `packages`, for example NVIDIA's toolkit from a
    # local repository while everything else comes from the OS archive.
    package_overrides: dict[PackageRole, PackageSource] = Field(default_factory=dict)
    images: ImageSource = Field(default_factory=ImageSource)


class DockerSection(_Section):
    """The Docker engine on the appliance."""

    package_source: Literal["distribution", "docker"] = "distribution"
    daemon_config: dict[str, Any] = Field(default_factory=dict)


class NvidiaSection(_Section):
    """The NVIDIA driver and the NVIDIA Container Toolkit."""

    # The driver branch; None takes the role's default for the OS (535 on
    # Debian 12, the only branch it carries; 570 on Ubuntu).
    driver_branch: str | None = Field(None, pattern=r"^[0-9]{3}$")
    # Reboot remote hosts when the driver needs it; a local run never reboots.
    allow_reboot: bool = True
    toolkit_version: str = Field("1.17.8-1", pattern=r"^[0-9][0-9A-Za-z.+~-]*$")
    # Make nvidia Docker's default runtime. The serving container requests
    # its GPUs explicitly, so this stays off unless other containers need it.
    default_runtime: bool = False


class MonitoringSection(_Section):
    """Prometheus, Alertmanager, the exporters and Grafana."""

    bind_address: str = "127.0.0.1"
    grafana_port: int = Field(3000, ge=1, le=65535)
    retention: str = Field("30d", pattern=r"^[0-9]+(ms|s|m|h|d|w|y)$")
    grafana_admin_password: SecretStr | None = None

    @field_validator("bind_address")
    @classmethod
    def _monitoring_bind_address_ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError as error:
            raise ValueError(_("must be an IP address such as 127.0.0.1 or 0.0.0.0")) from error
        return value

    @field_validator("grafana_admin_password", mode="before")
    @classmethod
    def _password_long_enough(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value) < 16:
            raise ValueError(_("must be at least 16 characters long, or left out to generate one"))
        return value


WeightsSourceName = Literal["auto", "present", "local", "url", "huggingface", "modelscope"]


class WeightsSection(_Section):
    """Source of the model weights, staged before the serving container starts."""

    # auto: the bundle with `install --bundle`, else ModelScope under the
    # china mirror preset, else Hugging Face. present: already in
    # model.weights_path, only checked for completeness.
    source: WeightsSourceName = "auto"
    # A directory on the appliance (local) or the base URL of a directory
    # that serves an oneclick-weights.json file list (url).
    location: str | None = Field(None, min_length=1)
    revision: str = Field("main", min_length=1, pattern=r"^\S+$")
    # Hugging Face token for gated repositories.
    token: SecretStr | None = None


class ProxySection(_Section):
    """An HTTP proxy for the Docker engine's pulls."""

    http: str | None = Field(None, min_length=1)
    https: str | None = Field(None, min_length=1)
    no_proxy: str | None = Field(None, min_length=1)

    @field_validator("http", "https")
    @classmethod
    def _proxy_is_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)


MirrorPreset = Literal["none", "china"]


class MirrorsSection(_Section):
    """Mirrors for networks that cannot reach the public services.

    A preset fills in every key left out; a key that is set wins.
    """

    preset: MirrorPreset = "none"
    # Base URL of a mirror site that carries the vendors' APT repositories
    # (docker-ce, libnvidia-container, grafana) and the OS archive.
    apt: str | None = None
    # Docker Hub registry mirrors, written to daemon.json's registry-mirrors.
    registry: list[str] | None = None
    # PyPI index for the wheels of `oneclick bundle build`.
    pypi: str | None = None
    huggingface: str | None = None
    modelscope: str | None = None
    proxy: ProxySection = Field(default_factory=ProxySection)
    # Seconds before an unreachable mirror fails the preflight check.
    check_timeout: int = Field(10, ge=1, le=120)

    @field_validator("apt", "pypi", "huggingface", "modelscope")
    @classmethod
    def _mirror_urls(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @field_validator("registry")
    @classmethod
    def _registry_urls(cls, value: list[str] | None) -> list[str] | None:
        for url in value or []:
            _check_http_url(url)
        return value


# Values that `mirrors.preset: china` fills in: public mirrors in mainland
# China that carry what the appliance fetches. An operator with an internal
# mirror sets the keys instead.
CHINA_MIRRORS: dict[str, Any] = {
    "apt": "https://mirrors.tuna.tsinghua.edu.cn",
    "registry": ["https://docker.m.daocloud.io"],
    "pypi": "https://pypi.tuna.tsinghua.edu.cn/simple",
    "huggingface": "https://hf-mirror.com",
    "modelscope": "https://www.modelscope.cn",
}


def effective_mirrors(mirrors: MirrorsSection) -> dict[str, Any]:
    """Return the mirror URLs in effect: the keys set, then the preset's."""
    preset = CHINA_MIRRORS if mirrors.preset == "china" else {}
    return {
        key: getattr(mirrors, key) if getattr(mirrors, key) is not None else preset.get(key)
        for key in ("apt", "registry", "pypi", "huggingface", "modelscope")
    }


def mask_url(url: str) -> str:
    """Return ``url`` with the password of any ``user:password@`` part masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:{MASK}@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class DiskSection(_Section):
    """Free space that preflight requires before installing."""

    docker_min_free_gb: int = Field(50, ge=0)
    weights_min_free_gb: int = Field(150, ge=0)


class FeaturesSection(_Section):
    """Switches for the parts of the install."""

    nvidia_driver: bool = True
    docker: bool = True
    nvidia_container_toolkit: bool = True
    inference: bool = True
    monitoring: bool = True
    grafana: bool = True


class ApplianceConfig(_Section):
    """The whole appliance configuration file."""

    version: Literal[1] = 1
    model: ModelSection = Field(default_factory=ModelSection)
    engine: EngineSection = Field(default_factory=EngineSection)
    api: ApiSection = Field(default_factory=ApiSection)
    gpu: GpuSection = Field(default_factory=GpuSection)
    sources: SourcesSection = Field(default_factory=SourcesSection)
    docker: DockerSection = Field(default_factory=DockerSection)
    nvidia: NvidiaSection = Field(default_factory=NvidiaSection)
    monitoring: MonitoringSection = Field(default_factory=MonitoringSection)
    disk: DiskSection = Field(default_factory=DiskSection)
    weights: WeightsSection = Field(default_factory=WeightsSection)
    mirrors: MirrorsSection = Field(default_factory=MirrorsSection)
    features: FeaturesSection = Field(default_factory=FeaturesSection)


def _raw_section(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    section: Any = data
    for key in keys:
        section = section.get(key) if isinstance(section, dict) else None
    return section if isinstance(section, dict) else {}


def _raw_int(section: dict[str, Any], key: str, default: int) -> int | None:
    value = section.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cross_field_problems(data: dict[str, Any]) -> list[str]:
    """Check the rules that involve more than one key.

    They run on the raw data, so their problems are reported together with
    any problem of a single key instead of only after those are fixed.
    """
    defaults = ApplianceConfig()
    problems: list[str] = []

    tp = _raw_int(
        _raw_section(data, "model"), "tensor_parallel_size", defaults.model.tensor_parallel_size
    )
    gpus = _raw_int(_raw_section(data, "gpu"), "count", defaults.gpu.count)
    if tp and gpus and tp > 0 and gpus > 0 and gpus % tp != 0:
        fits = ", ".join(str(n) for n in range(1, gpus + 1) if gpus % n == 0)
        problems.append(
            _(
                "model.tensor_parallel_size: {tp} does not divide gpu.count ({gpus}); "
                "write one of {fits}"
            ).format(tp=tp, gpus=gpus, fits=fits)
        )

    overrides = _raw_section(data, "sources", "package_overrides")
    names = ["packages", "images"] + [f"package_overrides.{role}" for role in overrides]
    for name in names:
        source = _raw_section(data, "sources", *name.split("."))
        mode = source.get("mode", "upstream")
        if mode == "mirror" and not source.get("mirror_url"):
            problems.append(
                _("sources.{name}.mirror_url: missing; mode 'mirror' needs it").format(name=name)
            )
        if mode == "local" and not source.get("local_path"):
            problems.append(
                _("sources.{name}.local_path: missing; mode 'local' needs it").format(name=name)
            )

    weights = _raw_section(data, "weights")
    weights_source = weights.get("source", "auto")
    location = weights.get("location")
    if weights_source in ("local", "url") and not location:
        problems.append(
            _("weights.location: missing; source '{source}' needs it").format(source=weights_source)
        )
    elif weights_source == "local" and isinstance(location, str) and location[:1] != "/":
        problems.append(
            _(
                "weights.location: source 'local' needs an absolute path starting with '/' "
                "(found {value})"
            ).format(value=location)
        )
    elif (
        weights_source == "url"
        and isinstance(location, str)
        and urlparse(location).scheme not in ("http", "https")
    ):
        problems.append(
            _(
                "weights.location: source 'url' needs an http:// or https:// URL (found {value})"
            ).format(value=location)
        )
    return problems


def _dotted(location: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in location:
        if item == "[key]":
            # pydantic's marker for an invalid mapping key, named just before it.
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif parts:
            parts.append(f".{item}")
        else:
            parts.append(item)
    return "".join(parts)


def _model_at(location: tuple[int | str, ...]) -> type[BaseModel] | None:
    """Return the section class that contains the key at ``location``."""
    model: type[BaseModel] = ApplianceConfig
    for item in location[:-1]:
        if not isinstance(item, str) or item not in model.model_fields:
            return None
        annotation = model.model_fields[item].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _render_value(value: Any) -> str:
    if isinstance(value, dict):
        return _("a mapping")
    if isinstance(value, list):
        return _("a list")
    return repr(value)


def _describe(error: Any) -> str:
    """Turn one pydantic error into a translated line with key, value and fix."""
    location = tuple(error["loc"])
    key = _dotted(location)
    kind = error["type"]
    context = error.get("ctx") or {}
    value = error.get("input")

    if kind == "extra_forbidden":
        model = _model_at(location)
        known = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(str(location[-1]), known, n=1)
        hint = (
            _("did you mean '{name}'?").format(name=close[0])
            if close
            else _("valid keys here: {keys}").format(keys=", ".join(known))
        )
        return _("{key}: unknown key; {hint}").format(key=key, hint=hint)

    if kind == "missing":
        return _("{key}: required key is missing").format(key=key)

    if kind == "value_error":
        reason = str(context.get("error", error["msg"]))
        return _("{key}: {reason} (found {value})").format(
            key=key, value=_render_value(value), reason=reason
        )

    messages = {
        "int_type": _("expected a whole number"),
        "int_parsing": _("expected a whole number"),
        "int_from_float": _("expected a whole number"),
        "float_type": _("expected a number"),
        "float_parsing": _("expected a number"),
        "bool_type": _("expected true or false"),
        "bool_parsing": _("expected true or false"),
        "string_type": _("expected text"),
        "list_type": _("expected a list"),
        "dict_type": _("expected a mapping of keys to values"),
        "model_type": _("expected a mapping of keys to values"),
        "model_attributes_type": _("expected a mapping of keys to values"),
        "string_too_short": _("must not be empty"),
        "string_pattern_mismatch": _("must not contain spaces"),
    }
    if kind in messages:
        return _("{key}: {reason} (found {value})").format(
            key=key, value=_render_value(value), reason=messages[kind]
        )
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bounds = {
            "greater_than_equal": _("must be at least {limit}"),
            "greater_than": _("must be greater than {limit}"),
            "less_than_equal": _("must be at most {limit}"),
            "less_than": _("must be less than {limit}"),
        }
        limit = next(iter(context.values()), "?")
        reason = bounds[kind].format(limit=limit)
        return _("{key}: {reason} (found {value})").format(
            key=key, value=_render_value(value), reason=reason
        )
    if kind == "literal_error":
        reason = _("write one of {choices}").format(choices=context.get("expected", "?"))
        return _("{key}: {reason} (found {value})").format(
            key=key, value=_render_value(value), reason=reason
        )
    # Any other pydantic error keeps pydantic's English wording.
    return _("{key}: {reason} (found {value})").format(
        key=key, value=_render_value(value), reason=error["msg"]
    )


def validate_data(data: Any, source: str) -> ApplianceConfig:
    """Validate parsed YAML ``data`` read from ``source``.

    Raises ConfigError with one line per problem.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            _("{source}: the configuration must be a mapping of keys, found {kind}").format(
                source=source, kind=type(data).__name__
            )
        )
    problems: list[str] = []
    config: ApplianceConfig | None = None
    try:
        config = ApplianceConfig.model_validate(data)
    except ValidationError as error:
        problems = [_describe(item) for item in error.errors(include_url=False)]
    problems += _cross_field_problems(data)
    if problems or config is None:
        raise ConfigError(
            _("{source}: the configuration is invalid").format(source=source), problems
        )
    return config


def load(path: Path | None) -> ApplianceConfig:
    """Load and validate the configuration file at ``path``; None gives the defaults."""
    if path is None:
        return ApplianceConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            _(
                "{path}: configuration file not found; create one with 'oneclick config init'"
            ).format(path=path)
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            _("{path}: cannot read the configuration file: {error}").format(path=path, error=error)
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = (
            _("line {line}, column {column}").format(line=mark.line + 1, column=mark.column + 1)
            if mark
            else _("unknown position")
        )
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(
            _("{path}: not valid YAML at {where}: {problem}").format(
                path=path, where=where, problem=problem
            )
        ) from None
    return validate_data(data, str(path))


def masked(config: ApplianceConfig) -> dict[str, Any]:
    """Return the configuration as plain data with every secret replaced by a mask."""
    data = config.model_dump(mode="python")
    data["api"]["key"] = MASK if config.api.key is not None else None
    password = config.monitoring.grafana_admin_password
    data["monitoring"]["grafana_admin_password"] = MASK if password is not None else None
    data["weights"]["token"] = MASK if config.weights.token is not None else None
    proxy = data["mirrors"]["proxy"]
    for key in ("http", "https"):
        if proxy[key] is not None:
            proxy[key] = mask_url(proxy[key])
    return data


def secret_values(config: ApplianceConfig) -> list[str]:
    """Return the secret values in ``config``, for scrubbing run artifacts."""
    secrets = [config.api.key, config.monitoring.grafana_admin_password, config.weights.token]
    values = [secret.get_secret_value() for secret in secrets if secret is not None]
    proxy = config.mirrors.proxy
    for url in (proxy.http, proxy.https):
        password = urlsplit(url).password if url else None
        if password:
            values.append(password)
    return values
