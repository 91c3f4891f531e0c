"""Where a search's or cross_validate's extra parameters go: scikit-learn's metadata routing.

With ``sklearn.set_config(enable_metadata_routing=True)`` every parameter goes where the
estimator, the scorers and the splitter asked for it (``set_fit_request``,
``set_score_request``, ``set_split_request``), through scikit-learn's public
``process_routing``, with its errors for metadata nobody requested. Without it, scikit-learn's
older rules: everything goes to ``fit``, ``groups`` to the splitter, and a search forwards
``sample_weight`` to the scorers that accept it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from sklearn import get_config
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping, process_routing


@dataclass
class Routed:
    """The parameters of each consumer: ``fit`` (the estimator), ``split`` (the splitter),
    ``score`` (the scorers); the sample-aligned ones are split per fold on the workers."""

    fit: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    score: dict = field(default_factory=dict)


def routing_enabled() -> bool:
    return bool(get_config().get("enable_metadata_routing", False))


def search_router(owner: Any, estimator: Any, scorer: Any, cv: Any) -> MetadataRouter:
    """A search's routing, as scikit-learn's searches declare it."""
    return (
        MetadataRouter(owner=owner)
        .add(estimator=estimator, method_mapping=MethodMapping().add(caller="fit", callee="fit"))
        .add(scorer=scorer, method_mapping=MethodMapping().add(caller="score", callee="score")
             .add(caller="fit", callee="score"))
        .add(splitter=cv, method_mapping=MethodMapping().add(caller="fit", callee="split"))
    )


def route_search(search: Any, params: Mapping[str, Any]) -> Routed:
    """A search's ``fit(**params)`` routed (see the module docstring); the score parameters
    of the routing-off rule are added by the caller, who knows the scorers."""
    if routing_enabled():
        routed = process_routing(search, "fit", **params)
        return Routed(dict(routed.estimator.fit), dict(routed.splitter.split),
                      dict(routed.scorer.score))
    params = dict(params)
    groups = params.pop("groups", None)
    return Routed(fit=params, split={"groups": groups})


def check_groups_routing_disabled(groups: Any) -> None:
    """scikit-learn's rule: with routing on, ``groups`` goes in ``params``."""
    if groups is not None and routing_enabled():
        raise ValueError(
            "`groups` can only be passed if metadata routing is not enabled via "
            "`sklearn.set_config(enable_metadata_routing=True)`. When routing is enabled, pass "
            "`groups` alongside other metadata via the `params` argument instead."
        )


def route_function(owner: str, estimator: Any, scorer: Any, cv: Any, groups: Any,
                   params: Mapping[str, Any] | None, *, partial_fit: bool = False,
                   incremental: bool = False) -> Routed:
    """``groups`` and ``params`` of a model_selection function (``owner``: cross_validate,
    learning_curve...), routed as scikit-learn routes them. ``scorer`` None: the function
    scores nothing (cross_val_predict); ``partial_fit``: the estimator's partial_fit consumes
    the fit parameters too (learning_curve), and with ``incremental`` the fits get its
    parameters, not fit's."""
    params = dict(params or {})
    check_groups_routing_disabled(groups)
    if not routing_enabled():
        return Routed(fit=params, split={"groups": groups})
    fit_mapping = MethodMapping().add(caller="fit", callee="fit")
    if partial_fit:
        fit_mapping = fit_mapping.add(caller="fit", callee="partial_fit")
    router = (
        MetadataRouter(owner=owner)
        .add(splitter=cv, method_mapping=MethodMapping().add(caller="fit", callee="split"))
        .add(estimator=estimator, method_mapping=fit_mapping)
    )
    if scorer is not None:
        router = router.add(scorer=scorer,
                            method_mapping=MethodMapping().add(caller="fit", callee="score"))
    try:
        routed = process_routing(router, "fit", **params)
    except UnsetMetadataPassedError as exc:
        # The user called the function, not a fit: name what they called.
        raise UnsetMetadataPassedError(
            message=str(exc).replace(f"{owner}.fit", owner),
            unrequested_params=exc.unrequested_params, routed_params=exc.routed_params,
        ) from None
    fit = dict(routed.estimator.partial_fit if incremental else routed.estimator.fit)
    score = dict(routed.scorer.score) if scorer is not None else {}
    return Routed(fit, dict(routed.splitter.split), score)


def route_cross_validate(estimator: Any, scorer: Any, cv: Any, groups: Any,
                         params: Mapping[str, Any] | None) -> Routed:
    """``cross_validate``'s ``groups`` and ``params``, routed as scikit-learn's."""
    return route_function("cross_validate", estimator, scorer, cv, groups, params)


def check_score_params(owner: Any, params: Mapping[str, Any]) -> dict:
    """The parameters of a fitted search's ``score``: routed, or refused without routing."""
    if routing_enabled():
        return dict(process_routing(owner, "score", **params).scorer.score)
    if params:
        raise ValueError(
            f"Passing extra keyword arguments to {type(owner).__name__}.score is only supported "
            "if enable_metadata_routing=True, which you can set using `sklearn.set_config`. See "
            "the Metadata Routing User guide <https://scikit-learn.org/stable/metadata_routing."
            f"html> for more details. Extra parameters passed are: {set(params)}"
        )
    return {}
