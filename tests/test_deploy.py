"""The docker-compose stack is valid and consistent, its dashboard queries real metrics, and
the sessionization example runs from Kafka with the deployment's configuration.

No Docker engine here: docker-compose.yml is checked by Debian's ``docker-compose config``,
the Prometheus config by ``promtool``, the dashboard's PromQL by ``promtool check rules``
and against the ``/metrics`` the example apps really serve.
"""

from __future__ import annotations

import doctest
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from running_app import wait_for

from statefulstream.observe.progress import BatchProgress
from statefulstream.scaleout.repartition import needs_repartition
from statefulstream.sinks import MemorySink
from statefulstream.sources import MemorySource

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import alerting  # noqa: E402
import env_config  # noqa: E402
import produce_events  # noqa: E402
import sessionization  # noqa: E402
import sessions_to_cassandra  # noqa: E402
import webhook_receiver  # noqa: E402
from env_config import ExampleEnv  # noqa: E402
from kafka_broker import free_port  # noqa: E402
from test_sessionization_example import as_tuples, offline_sessions  # noqa: E402

COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "statefulstream.json"
APPS = ("sessionization", "alerting", "sessions-to-scylla")
ONLY_AFTER_A_FAILURE = {"statefulstream_batch_failures_total"}
"""Labelled by phase, so without a failed batch the family is declared (HELP/TYPE) but has no sample."""
ONLY_WHEN_SCALED_OUT = {"statefulstream_partitions_owned", "statefulstream_restore_records_total",
                        "statefulstream_restore_records_per_second"}
"""Set by a scale-out process (the example apps here run in one process): declared, without samples."""


def docker_compose(*args: str, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/usr/bin/docker-compose", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as docker-compose resolves it (anchors merged, variables substituted)."""
    done = docker_compose("config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target -> source of a resolved service's volumes (docker-compose 1.x prints ``source:target:mode``)."""
    return {target: source for source, target, _mode in (v.split(":") for v in service.get("volumes", []))}


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bstatefulstream_[a-z_]+\b", expr))


class TestComposeFile:
    def test_docker_compose_accepts_the_file(self) -> None:
        done = docker_compose("config", "-q")
        assert done.returncode == 0, done.stderr

    def test_docker_compose_check_rejects_a_broken_file(self, tmp_path: pathlib.Path) -> None:
        broken = COMPOSE.read_text().replace("service_completed_successfully", "service_finished")
        (tmp_path / "docker-compose.yml").write_text(broken)
        done = docker_compose("config", "-q", cwd=tmp_path)
        assert done.returncode != 0 and "service_finished" in done.stderr

    def test_long_running_services_have_healthchecks_and_one_shots_gate_their_dependants(
            self, compose: dict[str, Any]) -> None:
        services = compose["services"]
        one_shots = {"kafka-init", "producer-clicks", "producer-devices"}
        for name, service in services.items():
            if name not in one_shots:
                assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
            for dependency, how in service.get("depends_on", {}).items():
                if dependency in one_shots:
                    assert how["condition"] == "service_completed_successfully", f"{name} -> {dependency}"
                elif dependency in ("kafka", "scylla", "webhook-receiver", "prometheus"):
                    assert how["condition"] == "service_healthy", f"{name} -> {dependency}"
        assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert services["sessions-to-scylla"]["depends_on"]["scylla"]["condition"] == "service_healthy"
        assert services["alerting"]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"

    def test_images_are_pinned_by_version(self, compose: dict[str, Any]) -> None:
        import tomllib

        version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
        for name, service in compose["services"].items():
            image, _, tag = service["image"].rpartition(":")
            if "build" in service:  # built here: tagged with the project's version
                assert tag == version, (name, service["image"])
            else:
                assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {service['image']} is a moving tag"

    def test_kafka_runs_in_kraft_mode_and_scylla_in_developer_mode(self, compose: dict[str, Any]) -> None:
        kafka = compose["services"]["kafka"]
        assert kafka["image"].startswith("apache/kafka:")
        assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
        scylla = " ".join(compose["services"]["scylla"]["command"])
        assert "--smp 1" in scylla and "--memory 750M" in scylla and "--developer-mode 1" in scylla

    def test_apps_keep_checkpoints_in_named_volumes_and_serve_metrics(self, compose: dict[str, Any]) -> None:
        for name in APPS:
            service = compose["services"][name]
            env = service["environment"]
            if env.get("SCALE_OUT") == "1":  # replicas: two processes must never share a checkpoint folder
                assert env["CHECKPOINT_DIR"] not in mounts(service)
            else:
                assert mounts(service)[env["CHECKPOINT_DIR"]] in compose["volumes"]  # a named volume
            assert env["METRICS_ADDRESS"] == "0.0.0.0:9108"
            ExampleEnv.from_environ(env)  # the apps accept their configuration

    def test_sessionization_runs_scaled_out_on_at_most_as_many_replicas_as_partitions(
            self, compose: dict[str, Any]) -> None:
        service = compose["services"]["sessionization"]
        env = service["environment"]
        assert env["SCALE_OUT"] == "1"
        topics = dict(re.findall(r"^\s*create (\S+) (\d+)$", compose["services"]["kafka-init"]["command"][0], re.M))
        assert 1 < service["deploy"]["replicas"] <= int(topics[env["EVENTS_TOPIC"]])
        for topic in (env["SESSIONS_TOPIC"], env["DEAD_LETTERS_TOPIC"]):
            assert topic in topics  # the app's Kafka sinks need their topics
        app = sessionization.app_from_env(env)
        assert app.source.scale_out is not None and app.source.group_id == "sessions"
        assert not needs_repartition(app.source, app.operator)  # grouped by the message key: no re-keying
        assert [type(s).__name__ for s in app.sinks] == ["KafkaSink"] and app.operator.state_sinks == []
        assert type(app.dead_letter_sink).__name__ == "KafkaDeadLetterSink"
        copier = compose["services"]["sessions-to-scylla"]["environment"]
        assert copier["EVENTS_TOPIC"] == env["SESSIONS_TOPIC"]
        assert compose["services"]["sessions-to-scylla"]["depends_on"]["scylla"]["condition"] == "service_healthy"

    def test_bind_mounts_exist_and_published_ports_are_loopback_only(self, compose: dict[str, Any]) -> None:
        for name, service in compose["services"].items():
            for source in mounts(service).values():
                if source.startswith("/"):
                    assert pathlib.Path(source).exists(), f"{name}: bind mount {source} is missing"
            for port in service.get("ports", []):
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"

    def test_producers_accept_their_command_lines(self, compose: dict[str, Any]) -> None:
        for name in ("producer-clicks", "producer-devices"):
            command = compose["services"][name]["command"]
            assert command[:2] == ["python", "examples/produce_events.py"]
            produce_events.parse_args(command[2:])


class TestDockerfile:
    def stages(self) -> list[list[str]]:
        stages: list[list[str]] = []
        for line in re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text()).splitlines():
            if line.startswith("FROM "):
                stages.append([])
            if stages and line.strip() and not line.startswith("#"):
                stages[-1].append(line)
        return stages

    def test_final_stage_is_slim_non_root_and_has_no_build_tools(self) -> None:
        build, final = self.stages()
        assert "build-essential" in " ".join(build)
        assert re.match(r"FROM python:3\.\d+\.\d+-slim-\w+$", final[0])
        assert not any(tool in " ".join(final) for tool in ("apt-get", "build-essential", "gcc"))
        assert any(line.startswith("COPY --from=build /opt/venv") for line in final)
        user = [line.split()[1] for line in final if line.startswith("USER ")]
        assert user and user[-1] not in ("root", "0")

    def test_image_installs_the_deployment_extras(self) -> None:
        build, _ = self.stages()
        assert 'pip install -c constraints.txt ".[kafka,cassandra,webhook,parquet]"' in " ".join(build)
        ignored = (ROOT / ".dockerignore").read_text().split()
        for needed in ("statefulstream", "sinks", "examples", "pyproject.toml", "README.md", "constraints.txt"):
            assert needed not in ignored

    def test_both_stages_use_one_pinned_base_image(self) -> None:
        froms = [stage[0].split()[1] for stage in self.stages()]
        assert len(set(froms)) == 1 and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", froms[0]), froms

    def test_every_dependency_of_the_image_is_pinned_in_the_constraints(self) -> None:
        import tomllib

        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        wanted = [*project["dependencies"]]
        for extra in ("kafka", "cassandra", "webhook", "parquet"):
            wanted += project["optional-dependencies"][extra]
        pins = {}
        for line in (ROOT / "constraints.txt").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, version = line.partition("==")
                assert re.fullmatch(r"[\w.+-]+", version), f"not an exact pin: {line!r}"
                pins[re.sub(r"[-_.]+", "-", name).lower()] = version
        for requirement in wanted:
            name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", requirement)[0]).lower()
            assert name in pins, f"{requirement} is not pinned in constraints.txt"
        python = re.search(r"python:(\d+\.\d+)", (ROOT / "Dockerfile").read_text())
        assert python and python[1] in (ROOT / "constraints.txt").read_text().split("\n", 3)[1]


class TestPrometheusConfig:
    def test_promtool_accepts_the_config(self) -> None:
        done = subprocess.run(["promtool", "check", "config", str(PROMETHEUS)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr

    def test_it_scrapes_every_app_on_its_metrics_port(self, compose: dict[str, Any]) -> None:
        config = yaml.safe_load(PROMETHEUS.read_text())
        targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
        # Replicated services are found through DNS (one address per replica), so every replica is scraped.
        targets |= {f"{name}:{sd['port']}" for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", [])
                    for name in sd["names"]}
        for name, service in compose["services"].items():
            if service.get("deploy", {}).get("replicas", 1) > 1:
                assert any(name in sd["names"] for job in config["scrape_configs"]
                           for sd in job.get("dns_sd_configs", [])), f"{name}: only one replica would be scraped"
        metrics_port = {name: compose["services"][name]["environment"]["METRICS_ADDRESS"].rsplit(":", 1)[1]
                        for name in APPS}
        assert targets == {f"{name}:{port}" for name, port in metrics_port.items()}


class TestGrafanaProvisioning:
    def test_datasource_and_dashboard_provider_match_the_compose_mounts(self, compose: dict[str, Any]) -> None:
        datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
        provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "statefulstream.yml").read_text())
        (source,) = datasource["datasources"]
        assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
        dashboards_dir = provider["providers"][0]["options"]["path"]
        assert pathlib.Path(mounts(compose["services"]["grafana"])[dashboards_dir]) == DASHBOARD.parent
        panels = json.loads(DASHBOARD.read_text())["panels"]
        assert {p["datasource"]["uid"] for p in panels if "targets" in p} == {source["uid"]}

    def test_dashboard_has_the_operations_panels(self) -> None:
        titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
        for needed in ("Throughput", "Source lag", "Batch duration by phase (p95)", "State size", "State keys",
                       "Late and dead-lettered records", "Alerts sent", "Partitions owned", "State restores"):
            assert needed in titles

    def test_promtool_parses_every_dashboard_query(self, tmp_path: pathlib.Path) -> None:
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query_{i}", "expr": expr.replace("$app", ".*")}
            for i, expr in enumerate(dashboard_exprs())]}]}
        path = tmp_path / "rules.yml"
        path.write_text(yaml.safe_dump(rules))
        done = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def scrape_during(app: Any) -> list[str]:
    """Run ``app`` (served on a free loopback port) and return ``/metrics`` as scraped after its last batch."""
    scrapes: list[str] = []

    def scrape(_: BatchProgress) -> None:
        with urllib.request.urlopen(f"{app.metrics_server.url}/metrics", timeout=5) as response:
            scrapes[:] = [response.read().decode()]

    app.add_listener(scrape)
    app.run()
    assert scrapes, "no batch ran"
    return scrapes


@pytest.fixture(scope="module")
def served_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """Sample names (and declared families) the two example apps serve, with their label values.

    The apps run as deployed: with a RocksDB checkpoint (the state size is known only there).
    """
    checkpoints = tmp_path_factory.mktemp("checkpoints")
    receiver = webhook_receiver.WebhookReceiver()
    receiver.start()
    try:
        pagerduty = alerting.alert_sink_from_env({"PAGERDUTY_ROUTING_KEY": "metrics-test",
                                                  "PAGERDUTY_URL": receiver.url})
        texts = [*scrape_during(sessionization.build_app(sink=MemorySink(), max_records_per_trigger=1000,
                                                         checkpoint_dir=str(checkpoints / "sessions"),
                                                         metrics_address="127.0.0.1:0")),
                 *scrape_during(alerting.build_app(sink=pagerduty, checkpoint_dir=str(checkpoints / "alerts"),
                                                   metrics_address="127.0.0.1:0"))]
    finally:
        receiver.stop()
    samples: set[str] = set()
    declared: set[str] = set()
    labels: set[str] = set()
    for text in texts:
        for family in text_string_to_metric_families(text):
            declared.add(family.name + ("_total" if family.type == "counter" else ""))
            for sample in family.samples:
                samples.add(sample.name)
                labels.update(f'{sample.name}{{{k}="{v}"}}' for k, v in sample.labels.items())
    yield {"samples": samples, "declared": declared, "labels": labels}


class TestDashboardMetrics:
    def test_every_metric_the_dashboard_queries_is_served_by_the_apps(self, served_metrics: dict[str, set[str]]
                                                                     ) -> None:
        queried = set().union(*map(metric_names, dashboard_exprs()))
        assert len(queried) >= 15
        missing = {m for m in queried - ONLY_AFTER_A_FAILURE - ONLY_WHEN_SCALED_OUT
                   if m not in served_metrics["samples"]}
        assert missing == set()
        assert ONLY_AFTER_A_FAILURE | ONLY_WHEN_SCALED_OUT <= served_metrics["declared"]

    def test_label_values_the_dashboard_filters_on_exist(self, served_metrics: dict[str, set[str]]) -> None:
        for expr in dashboard_exprs():
            for metric, matchers in re.findall(r"\b(statefulstream_[a-z_]+)\{([^}]*)\}", expr):
                for label, value in re.findall(r'(\w+)="([^"]*)"', matchers):
                    assert f'{metric}{{{label}="{value}"}}' in served_metrics["labels"], expr

    def test_histogram_series_are_complete(self, served_metrics: dict[str, set[str]]) -> None:
        base = "statefulstream_batch_duration_seconds"
        assert {f"{base}_bucket", f"{base}_sum", f"{base}_count"} <= served_metrics["samples"]


@pytest.fixture
def live_apps(tmp_path: pathlib.Path) -> Iterator[dict[str, str]]:
    """Both examples running on interval triggers with metrics served; compose service name -> host:port."""
    receiver = webhook_receiver.WebhookReceiver()
    receiver.start()
    pagerduty = alerting.alert_sink_from_env({"PAGERDUTY_ROUTING_KEY": "prometheus-test",
                                              "PAGERDUTY_URL": receiver.url})
    apps = {"sessionization": sessionization.build_app(sink=MemorySink(), trigger="500 ms",
                                                       max_records_per_trigger=1000,
                                                       checkpoint_dir=str(tmp_path / "sessions"),
                                                       metrics_address="127.0.0.1:0"),
            "alerting": alerting.build_app(sink=pagerduty, trigger="50 ms", checkpoint_dir=str(tmp_path / "alerts"),
                                           metrics_address="127.0.0.1:0"),
            "sessions-to-scylla": sessions_to_cassandra.build_app(
                MemorySource([{"user": "u1", "start": 1, "end": 2, "events": 1}]), MemorySink(), trigger="500 ms",
                checkpoint_dir=str(tmp_path / "copy"), metrics_address="127.0.0.1:0")}
    committed = {name: threading.Event() for name in apps}
    threads = []
    for name, app in apps.items():
        app.add_listener(lambda _p, done=committed[name]: done.set())
        threads.append(threading.Thread(target=app.run, daemon=True))
        threads[-1].start()
    try:
        wait_for(lambda: all(e.is_set() for e in committed.values()), "a first batch of each app")
        yield {name: urllib.parse.urlsplit(app.metrics_server.url).netloc for name, app in apps.items()}
    finally:
        for app in apps.values():
            app.stop()
        for thread in threads:
            thread.join(30)
        receiver.stop()


class TestRealPrometheus:
    def test_every_dashboard_query_returns_series_from_prometheus_scraping_the_apps(
            self, live_apps: dict[str, str], tmp_path: pathlib.Path) -> None:
        # The deployment's scrape config, with the compose host names replaced by the loopback apps.
        config = yaml.safe_load(PROMETHEUS.read_text())
        config["global"]["scrape_interval"] = "1s"
        for job in config["scrape_configs"]:
            for group in job["static_configs"]:
                group["targets"] = [live_apps[t.rsplit(":", 1)[0]] for t in group["targets"]]
            for sd in job.pop("dns_sd_configs", []):  # one loopback app stands for the replicas
                job["static_configs"] += [{"targets": [live_apps[name]]} for name in sd["names"]]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        with open(tmp_path / "prometheus.log", "wb") as log:
            proc = subprocess.Popen(["/usr/bin/prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            def query(expr: str) -> list[Any]:
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                url = f"http://127.0.0.1:{port}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = json.loads(response.read())
                assert body["status"] == "success", (expr, body)
                return body["data"]["result"]

            def rates_known() -> bool:
                try:
                    return len(query("rate(statefulstream_batches_committed_total[1m])")) == len(live_apps)
                except OSError:
                    return False  # not listening yet

            wait_for(rates_known, "two scrapes of each app")
            (up,) = query('count(up{job="statefulstream"} == 1)')
            assert up["value"][1] == str(len(live_apps))
            for expr in dashboard_exprs():
                result = query(expr.replace("$app", ".*"))
                unset = ONLY_AFTER_A_FAILURE | ONLY_WHEN_SCALED_OUT  # scale-out series: test_scaleout.py
                assert result or metric_names(expr) <= unset, f"no series for {expr}"
        finally:
            proc.terminate()
            proc.wait(10)


def cassandra_type(cql: str) -> Any:
    from cassandra.cqltypes import _cqltypes, cqltype_to_python

    name, *params = cqltype_to_python(cql)
    cls = _cqltypes[name]
    return cls.apply_parameters([_cqltypes[p] for p in params[0]]) if params else cls


def still_open(path: pathlib.Path) -> set[str]:
    """Users whose last session is not closed at the end of ``path``: their last event is in no closed session."""
    last_event: dict[str, int] = {}
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and isinstance(event.get("ts"), int) and "user" in event:
            last_event[event["user"]] = max(event["ts"], last_event.get(event["user"], event["ts"]))
    closed_until: dict[str, int] = {}
    for user, _, end, _ in offline_sessions(path):
        closed_until[user] = max(end, closed_until.get(user, end))
    return {user for user, ts in last_event.items() if ts > closed_until.get(user, -1)}


class TestSessionizationDeployment:
    def test_without_environment_it_runs_on_the_sample(self) -> None:
        app = sessionization.app_from_env({})
        assert type(app.source).__name__ == "FileSource" and type(app.sinks[0]).__name__ == "ConsoleSink"
        assert app.operator is not None and app.operator.state_sinks == []

    def test_cassandra_environment_writes_sessions_and_mirrors_state(self) -> None:
        app = sessionization.app_from_env({"CASSANDRA_HOSTS": "127.0.0.1, 127.0.0.2", "CASSANDRA_KEYSPACE": "ks"})
        (sink,) = app.sinks
        (state_sink,) = app.operator.state_sinks
        assert (sink.keyspace, sink.table, state_sink.table) == ("ks", "sessions", "open_sessions")
        assert sink.options.hosts == ("127.0.0.1", "127.0.0.2")
        assert sink.schema.primary_key == ("user", "start")

    def test_session_rows_and_state_bind_to_the_table_column_types(self) -> None:
        sink, state_sink = sessionization.cassandra_sinks({"CASSANDRA_HOSTS": "127.0.0.1"})
        rows, changes = MemorySink(), MemorySink()
        sessionization.build_app(sink=rows, state_sink=changes).run()
        assert rows.rows and changes.rows
        for row in rows.rows[:200]:
            columns = sink.mapping.columns_for(row)
            for column, value in zip(columns, sink.mapping.values(row, columns), strict=True):
                cassandra_type(sink.schema.columns[column]).serialize(value, 4)
        state_columns = state_sink.mapping.columns_for(None)
        for change in [c for c in changes.rows if not c.removed][:200]:
            for column, value in zip(state_columns, state_sink.mapping.values(change.value, state_columns),
                                     strict=True):
                cassandra_type(state_sink.schema.columns[column]).serialize(value, 4)

    def test_open_sessions_mirror_in_the_cql_table_through_the_driver(self) -> None:
        from cql_server import CqlServer  # the loopback CQL stand-in (tests/cql_server.py): no Scylla runs here

        server = CqlServer()
        try:
            _, state_sink = sessionization.cassandra_sinks({"CASSANDRA_HOSTS": "127.0.0.1",
                                                           "CASSANDRA_PORT": str(server.port)})
            sessionization.build_app(sink=MemorySink(), state_sink=state_sink, max_records_per_trigger=1000).run()
            table = server.tables[("demo", "open_sessions")]
        finally:
            server.close()
        assert set(table.columns) == {"user", "start", "end", "events", "timeout_ms"}
        assert {key for (key,) in table.rows} == still_open(sessionization.DATA)
        assert len(server.statements) > 0 and any("DELETE FROM demo.open_sessions" in s for s in server.statements)

    @pytest.mark.kafka
    def test_sessions_from_kafka_match_an_offline_computation(self, kafka_broker: Any, tmp_path: pathlib.Path) -> None:
        topic = kafka_broker.create_topic(partitions=1)
        argv = ["clicks", "--bootstrap", kafka_broker.bootstrap, "--topic", topic, "--keys", "60", "--rate", "20",
                "--count", "3000", "--start-ms", "1714557600000", "--no-pace", "--lateness", "5 seconds",
                "--late-fraction", "0.05", "--seed", "5"]
        assert produce_events.main(argv) == 3000
        produced = list(produce_events.events_for(produce_events.parse_args(argv)))
        recorded = tmp_path / "produced.jsonl"
        recorded.write_text("".join(json.dumps(e) + "\n" for e in produced))
        expected = offline_sessions(recorded)

        env = ExampleEnv.from_environ({"KAFKA_BOOTSTRAP": kafka_broker.bootstrap, "EVENTS_TOPIC": topic,
                                       "KAFKA_WATERMARK_PROBE": "1"})
        sink, mirror = MemorySink(), MemorySink()
        app = sessionization.build_app(env.kafka_source("sessions"), sink, max_records_per_trigger=400,
                                       state_sink=mirror, checkpoint_dir=str(tmp_path / "cp"))
        app.run()
        assert len(expected) > 30
        assert as_tuples(sink.rows) == expected
        state: dict[str, Any] = {}
        for change in mirror.rows:
            if change.removed:
                state.pop(change.key, None)
            else:
                state[change.key] = change.value
        assert set(state) == still_open(recorded)


def test_examples_docstring_examples_run() -> None:
    for module in (env_config, produce_events, webhook_receiver, alerting):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


@pytest.mark.kafka
def test_scaled_out_sessionization_with_the_compose_environment_and_its_copy_to_cassandra(
        kafka_broker: Any, tmp_path: pathlib.Path) -> None:
    """Two processes of the example as compose runs them (SCALE_OUT=1, sessions and dead letters to Kafka) emit
    exactly the offline sessions; sessions_to_cassandra.py then copies them into the CQL table."""
    from cql_server import CqlServer
    from test_scaleout import committed_view

    partitions = 3
    clicks = kafka_broker.create_topic(partitions=partitions)
    sessions_topic, dead_topic = kafka_broker.create_topic(), kafka_broker.create_topic()
    argv = ["clicks", "--bootstrap", kafka_broker.bootstrap, "--topic", clicks, "--keys", "40", "--rate", "20",
            "--count", "1500", "--start-ms", "1714557600000", "--no-pace", "--seed", "9"]
    assert produce_events.main(argv) == 1500
    produced = list(produce_events.events_for(produce_events.parse_args(argv)))
    # One event per partition far past the others: every partition's watermark then closes every session.
    flush_ts = max(e["ts"] for e in produced) + 600_000
    flushes = [{"user": f"flush-{p}", "ts": flush_ts, "page": "/home", "action": "view"} for p in range(partitions)]
    for p, event in enumerate(flushes):
        kafka_broker.produce(clicks, [json.dumps(event).encode()], keys=[event["user"].encode()], partition=p)
    recorded = tmp_path / "produced.jsonl"
    recorded.write_text("".join(json.dumps(e) + "\n" for e in [*produced, *flushes]))
    expected = offline_sessions(recorded)
    assert len(expected) > 30 and not any(user.startswith("flush") for user, *_ in expected)

    env = {"KAFKA_BOOTSTRAP": kafka_broker.bootstrap, "EVENTS_TOPIC": clicks, "SCALE_OUT": "1",
           "SESSIONS_TOPIC": sessions_topic, "DEAD_LETTERS_TOPIC": dead_topic, "KAFKA_WATERMARK_PROBE": "1",
           "TRIGGER": "available_now", "PATH": os.environ.get("PATH", "")}
    procs = []
    for n in range(2):  # each process its own checkpoint, as each compose replica has its own container
        log = (tmp_path / f"worker-{n}.log").open("wb")
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "examples" / "sessionization.py")],
                                      env={**env, "CHECKPOINT_DIR": str(tmp_path / f"worker-{n}")},
                                      stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT))
    for n, proc in enumerate(procs):
        assert proc.wait(180) == 0, (tmp_path / f"worker-{n}.log").read_text()[-3000:]
    assert as_tuples(committed_view(kafka_broker, sessions_topic)) == expected

    server = CqlServer()
    try:
        copier = sessions_to_cassandra.app_from_env({
            "KAFKA_BOOTSTRAP": kafka_broker.bootstrap, "EVENTS_TOPIC": sessions_topic, "KAFKA_WATERMARK_PROBE": "1",
            "CASSANDRA_HOSTS": "127.0.0.1", "CASSANDRA_PORT": str(server.port), "TRIGGER": "available_now",
            "CHECKPOINT_DIR": str(tmp_path / "copy")})
        copier.run()
        table = server.tables[("demo", "sessions")]
    finally:
        server.close()
    # Upserts on (user, start): one row per session, whatever the topic held more than once.
    assert sorted(user for user, _start in table.rows) == sorted(user for user, *_ in expected)
