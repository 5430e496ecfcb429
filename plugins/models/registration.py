"""Registering an uploaded artifact: its kind and format, its size, the kind's check (off the event loop),
the custom-operator policy (a description listing ``custom_ops`` is admitted only with ``[plugins.models]
onnx_custom_ops = true``), and the feature names it is bound to (given, or those of a feature pipeline, asked
of the ``features`` service)."""

from __future__ import annotations

from typing import Any

from ml_processing.sdk import BadRequest, MlpError, TooLarge
from ml_processing.sdk.services.features import Features

from .catalog import Catalog
from .declarations import RegisterArgs
from .onnx_kind import refused_by_policy


async def register(catalog: Catalog, features: Features, args: RegisterArgs, max_bytes: int,
                   custom_ops: bool = False) -> dict[str, Any]:
    """Check, write (compiling the fast path), load and maybe promote the uploaded version. `custom_ops`:
    may a graph use operators outside the standard ONNX domains (``[plugins.models] onnx_custom_ops``)?"""
    kind = catalog.kinds.get(args.kind)
    if kind is None:
        raise BadRequest(f"unknown model kind {args.kind!r:.40} (kinds: {', '.join(catalog.kinds)})", field="kind")
    fmt = args.format or (kind.formats[0] if kind.formats else "")
    if fmt not in kind.formats:
        raise BadRequest(f"{kind.name} models are uploaded as {', '.join(kind.formats) or 'nothing'}, not "
                         f"{fmt!r:.40}", field="format")
    if len(args.artifact) > max_bytes:
        raise TooLarge(f"artifact of {len(args.artifact) / 2**20:.1f} MiB; at most {max_bytes / 2**20:g} MiB",
                       field="artifact")
    described = await catalog.run_in_thread(kind.check, args.artifact, fmt)
    refused = refused_by_policy(described, custom_ops)
    if refused is not None:
        raise refused
    names = await _feature_names(features, args)
    return await catalog.add(args.model_id, kind, fmt, args.artifact, described,
                             {"features": names, "pipeline": args.pipeline, "metrics": args.metrics}, args.promote)


async def _feature_names(features: Features, args: RegisterArgs) -> list[str] | None:
    """The feature names a version is bound to: those of its feature pipeline, or as given."""
    names = args.features
    if args.pipeline is not None:
        name, _, version = args.pipeline.partition("@")
        try:
            found = await features.pipelines(name)
        except MlpError as exc:
            raise BadRequest(f"pipeline {args.pipeline}: {exc.message}", field="pipeline") from None
        versions = {str(v["version"]): v for v in found["pipelines"][0]["versions"]}
        if version not in versions:
            raise BadRequest(f"pipeline {name!r} has no version {version}", field="pipeline")
        names = list(versions[version]["features"])
    if names is not None and len(set(names)) != len(names):
        raise BadRequest("feature names must be unique", field="features")
    return names
