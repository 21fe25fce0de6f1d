"""ApiServer.metric's parsing: the API's own /metrics text, read with prometheus_client's parser."""

from __future__ import annotations

import pytest

from chaoslab.api_server import sample_sum
from service.metrics import Metrics


@pytest.fixture
def metrics_text() -> str:
    """What GET /metrics returns, from the service's own Metrics."""
    metrics = Metrics()
    metrics.db_queries.labels("primary").inc(2)
    metrics.db_queries.labels("replica").inc(5)
    metrics.cache_requests.labels("miss").inc(3)
    metrics.cache_requests.labels("hit").inc(7)
    metrics.stampede_events.labels("lock_waited").inc()
    metrics.http_duration.labels("GET", "/products/{id}").observe(0.003)
    metrics.http_duration.labels("GET", "/health").observe(0.2)
    body, _ = metrics.render()
    return body.decode()


def test_without_labels_every_sample_of_the_name_is_summed(metrics_text):
    assert sample_sum(metrics_text, "db_queries_total") == 7


def test_labels_select_the_samples(metrics_text):
    assert sample_sum(metrics_text, "db_queries_total", role="replica") == 5
    assert sample_sum(metrics_text, "cache_requests_total", result="miss") == 3
    assert sample_sum(metrics_text, "stampede_events_total", event="lock_waited") == 1
    assert sample_sum(metrics_text, "stampede_events_total", event="early_refresh") == 0  # exported at zero


def test_the_name_is_the_samples_not_the_familys(metrics_text):
    # The counter family is "db_queries"; its samples are db_queries_total and db_queries_created.
    assert "db_queries_created" in metrics_text
    assert sample_sum(metrics_text, "db_queries") == 0
    assert sample_sum(metrics_text, "http_request_duration_seconds_count") == 2
    assert sample_sum(metrics_text, "http_request_duration_seconds_count", route="/health") == 1


def test_labels_must_all_match(metrics_text):
    assert sample_sum(metrics_text, "http_request_duration_seconds_count", method="GET", route="/health") == 1
    assert sample_sum(metrics_text, "http_request_duration_seconds_count", method="POST", route="/health") == 0


def test_absent_metric_or_label_value_is_zero(metrics_text):
    assert sample_sum(metrics_text, "no_such_metric_total") == 0
    assert sample_sum(metrics_text, "cache_requests_total", result="nonsense") == 0
    assert sample_sum(metrics_text, "cache_requests_total", no_such_label="x") == 0
    assert sample_sum("", "db_queries_total") == 0


def test_a_literal_exposition_with_escaped_label_values():
    text = (
        "# HELP http_requests_total HTTP requests.\n"
        "# TYPE http_requests_total counter\n"
        'http_requests_total{method="GET",route="/a,b",status="200"} 4.0\n'
        'http_requests_total{method="GET",route="/say \\"hi\\"",status="500"} 1.0\n'
        'http_requests_total{method="POST",route="/a,b",status="200"} 2.0\n'
        'http_requests_created{method="GET",route="/a,b",status="200"} 1.7e+09\n'
    )
    assert sample_sum(text, "http_requests_total") == 7
    assert sample_sum(text, "http_requests_total", route="/a,b") == 6
    assert sample_sum(text, "http_requests_total", route='/say "hi"') == 1
    assert sample_sum(text, "http_requests_total", method="GET", status="200") == 4
