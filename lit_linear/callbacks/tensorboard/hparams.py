"""TensorBoard HParams summaries (experiment, session start, session end), without TensorFlow.

TensorBoard's own ``hparams.summary`` helpers import TensorFlow; these build the same protocol
buffers with what the ``tensorboard`` package ships, for any SummaryWriter's ``file_writer``.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

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


def experiment_summary(
    hparams: Mapping[str, float | str], metrics: Mapping[str, str], differs: Collection[str] = ()
) -> summary_pb2.Summary:
    """Declare the hyperparameters (typed by the example values given) and metric tags shown.

    ``differs`` names the hyperparameters that vary between sessions (the grid's axes): the
    HParams dashboard lists those first and shows only the first five columns by default.
    No domain is declared, so the dashboard's filters start open (-inf..+inf, any string) and
    sessions of other sweeps under the same log folder are not filtered out.
    """
    hparam_infos = [
        api_pb2.HParamInfo(
            name=name,
            type=api_pb2.DATA_TYPE_STRING if isinstance(value, str) else api_pb2.DATA_TYPE_FLOAT64,
            differs=name in differs,
        )
        for name, value in hparams.items()
    ]
    metric_infos = [
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=label) for tag, label in metrics.items()
    ]
    experiment = api_pb2.Experiment(hparam_infos=hparam_infos, metric_infos=metric_infos, time_created_secs=time.time())
    return _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))


def session_start_summary(hparams: Mapping[str, float | str], group_name: str) -> summary_pb2.Summary:
    """Open one session (one row of the HParams table) with these hyperparameter values."""
    info = plugin_data_pb2.SessionStartInfo(group_name=group_name, start_time_secs=time.time())
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
