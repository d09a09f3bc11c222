"""TensorBoard HParams summaries (experiment, session start, session end), without TensorFlow.

TensorBoard's own ``hparams.summary`` helpers import TensorFlow; these build the same protocol
buffers with what the ``tensorboard`` package ships, for any SummaryWriter's ``file_writer``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

STATUS_SUCCESS = api_pb2.STATUS_SUCCESS
STATUS_FAILURE = api_pb2.STATUS_FAILURE
STATUS_UNKNOWN = api_pb2.STATUS_UNKNOWN


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    data.version = metadata.PLUGIN_DATA_VERSION
    value = summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR
    )
    return summary_pb2.Summary(value=[value])


def interval_hparam(name: str, low: float, high: float, *, differs: bool) -> api_pb2.HParamInfo:
    """A number hyperparameter whose values lie in ``[low, high]``.

    An interval filters nothing by default (the dashboard's min and max start empty), so sessions
    of other sweeps under the same log folder stay listed.
    """
    domain = api_pb2.Interval(min_value=low, max_value=high)
    return api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_FLOAT64, domain_interval=domain, differs=differs)


def discrete_hparam(name: str, values: Sequence[str], *, differs: bool) -> api_pb2.HParamInfo:
    """A string hyperparameter taking one of ``values``: the dashboard filters it with one checkbox per value."""
    info = api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_STRING, differs=differs)
    info.domain_discrete.extend(values)
    return info


def experiment_summary(hparams: Sequence[api_pb2.HParamInfo], metrics: Mapping[str, str]) -> summary_pb2.Summary:
    """Declare the hyperparameters the HParams dashboard lists, and its metrics (tag: display name), in order.

    TensorBoard lists the hyperparameters marked ``differs`` first, each group by name, and shows
    the first five; it keeps the metrics in the order given, shows the first five and colours the
    parallel-coordinates view by the first. Hyperparameters a session carries but the experiment
    does not list are not shown.
    """
    metric_infos = [
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=label) for tag, label in metrics.items()
    ]
    experiment = api_pb2.Experiment(hparam_infos=hparams, metric_infos=metric_infos, time_created_secs=time.time())
    return _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))


def session_start_summary(
    hparams: Mapping[str, float | str], group_name: str, start_time: float
) -> summary_pb2.Summary:
    """Open one session (one row of the HParams table, its Trial ID ``group_name``) with these hyperparameter
    values; ``start_time`` in seconds since the epoch."""
    info = plugin_data_pb2.SessionStartInfo(group_name=group_name, start_time_secs=start_time)
    for name, value in hparams.items():
        if isinstance(value, str):
            info.hparams[name].string_value = value
        else:
            info.hparams[name].number_value = float(value)
    return _summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=info))


def session_end_summary(status: int) -> summary_pb2.Summary:
    """Close a session with ``STATUS_SUCCESS``, ``STATUS_FAILURE`` or ``STATUS_UNKNOWN``."""
    info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    return _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=info))
