"""Run the Ray Serve app on this machine: a loopback-only local Ray that leaves nothing behind when stopped.

`python -m services.ray_app.local_launcher` is the command of the stack's `ray-serve` service. It starts a
private, single-node Ray (loopback only, dashboard off, object store capped, token auth on with a
throw-away token, its temporary folder inside the workshop state folder), starts Serve's HTTP proxy
on 127.0.0.1:<serve_port>, deploys services.ray_app.app's application, and then watches Ray's gcs_server and
raylet: when either dies it exits, so that the stack's supervisor starts the service again. On SIGTERM or
SIGINT it stops every Ray process it started (as ray.shutdown does: SIGTERM, then SIGKILL after a second) and
removes Ray's temporary folder, so `stack.down()` leaves no raylet, gcs_server or worker behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from helpers.config import get_settings
from helpers.layers.ray.local import (
    APP_NAME,
    OBJECT_STORE_BYTES,
    RAY_START_ATTEMPTS,
    SERVE_LOGGING,
    WITHOUT_PANDAS,
    local_app_args,
    ray_cpus,
    ray_environment,
    ray_temp_dir,
)


CORE_CHECK_S = 2.0  # how often the launcher checks that Ray's gcs_server and raylet still run
CORE_PROCESSES = ("gcs_server", "raylet")
RAY_GRACE_S = 1.0  # seconds a Ray process gets after SIGTERM before SIGKILL (ray.shutdown gives each the same)


def ray_core_processes() -> list[Any]:
    """This launcher's gcs_server and raylet (children of this process, started by ray.init)."""
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if p.name() in CORE_PROCESSES]


def _running(proc: Any) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class StopRequested(BaseException):
    """SIGTERM or SIGINT arrived: stop Ray's processes, then remove Ray's temporary folder."""


def _kill_children(grace: float = 5.0) -> None:
    """Terminate every process this launcher started (then kill what is left after `grace` seconds)."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=1)


NO_DASHBOARD_ADDRESS = b"127.0.0.1:0"  # the API server's address as the agents read it: a port nothing can listen on


def skip_unused_head_processes() -> None:
    """Keep ray.init from starting two head processes a single-node Ray never uses (about 250 MB RSS here).

    - The autoscaler's monitor: one machine has nothing to scale (on EKS, KubeRay's autoscaler does that).
    - The dashboard's API server: with the dashboard off it loads only the usage-statistics module, and usage
      statistics are off (RAY_USAGE_STATS_ENABLED=0).
    ray.init has no switch for either (`ray start --no-monitor` has one for the first), so the two methods of
    Ray's head node that start them do nothing in this process. The API server also writes its address into the
    GCS, and the dashboard agent's event reporter asks for it once a second, logging an error each time, until it
    is there: NO_DASHBOARD_ADDRESS is written instead (events it would post there were refused before too: the
    API server without the dashboard has no /report_events). tests/test_serving.py checks that Ray 2.60 still has
    both methods, that neither process runs, and that the agent logs no error."""
    from ray._private import node, ray_constants

    def no_api_server(self: Any, *, include_dashboard: bool | None, raise_on_failure: bool) -> None:
        self.get_gcs_client().internal_kv_put(ray_constants.DASHBOARD_ADDRESS.encode(), NO_DASHBOARD_ADDRESS, True,
                                              namespace=ray_constants.KV_NAMESPACE_DASHBOARD)

    node.Node.start_monitor = lambda self: None
    node.Node.start_api_server = no_api_server


def _print_deployment_errors() -> None:
    """The last lines of each failed deployment's error, so the end of the service log names the cause."""
    from ray import serve

    try:
        app = serve.status().applications.get(APP_NAME)
    except Exception:  # Serve itself is down: the traceback above is all there is
        return
    for name, dep in (app.deployments.items() if app else []):
        if dep.message:
            print(f"ray-serve: deployment {name} failed: " + " | ".join(dep.message.strip().splitlines()[-2:]),
                  flush=True)


def _shutdown(temp_dir: Path, clean: bool) -> None:
    """Stop Ray the way ray.shutdown stops its processes (SIGTERM, RAY_GRACE_S, then SIGKILL), all at once.

    serve.shutdown and ray.shutdown themselves would wait on a controller and a GCS that the stack has signalled
    together with this launcher: 7 s of timeouts, then the raylet's own 10 s drain before the stack's SIGKILL."""
    _kill_children(RAY_GRACE_S)
    if clean:
        shutil.rmtree(temp_dir, ignore_errors=True)
    else:
        print(f"Ray's logs stay in {temp_dir} until ray-serve starts again (each start clears it).", flush=True)


def main() -> int:
    """Start Ray and Serve on loopback, deploy the app, block until SIGTERM/SIGINT, then clean up."""
    settings = get_settings()
    if settings.serve_api_key is None:
        print("error: settings.serve_api_key is not set (run helpers.config.ensure_secrets()).", flush=True)
        return 2
    # Ray reads its configuration (auth mode, address choice) when it is first imported: set it before.
    chat_key = settings.model_server_api_key.get_secret_value() if settings.model_server_api_key else ""
    os.environ.update(ray_environment(settings.serve_api_key.get_secret_value(), chat_key))
    sys.path.insert(0, str(WITHOUT_PANDAS))  # this process too (the Ray processes get it from PYTHONPATH)
    from services.ray_app.app import AppArgs, app_builder

    args = AppArgs.model_validate(local_app_args(settings)).model_dump()
    temp_dir = ray_temp_dir(settings)
    shutil.rmtree(temp_dir, ignore_errors=True)  # a previous run killed hard may have left sessions
    temp_dir.mkdir(parents=True, exist_ok=True)

    import ray
    from ray import serve

    skip_unused_head_processes()
    started = time.monotonic()
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            ray.init(
                _node_ip_address=settings.host,
                include_dashboard=False,
                object_store_memory=OBJECT_STORE_BYTES,
                _temp_dir=str(temp_dir),
                num_cpus=ray_cpus(args),
                num_gpus=0,
                namespace="llm-workshop",
                configure_logging=True,
                logging_level="warning",
                log_to_driver=True,
            )
            break
        except Exception as exc:  # Ray gives its raylet a fixed 30 s to register; a busy machine can miss that
            if "timed out during startup" not in str(exc) or attempt == RAY_START_ATTEMPTS:
                raise
            print(f"ray-serve: Ray did not start in time (attempt {attempt} of {RAY_START_ATTEMPTS}; "
                  "the machine is busy); retrying", flush=True)
            ray.shutdown()
            _kill_children()  # a half-started GCS or raylet of the failed attempt
            shutil.rmtree(temp_dir, ignore_errors=True)
            temp_dir.mkdir(parents=True, exist_ok=True)

    # Our handlers go in after ray.init, which installs its own: SIGTERM/SIGINT now mean "clean up",
    # even while serve.run is still waiting for the app (the handler interrupts it).
    def request_stop(*_: Any) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # one clean-up is enough
        raise StopRequested

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    clean, code = False, 0
    try:
        serve.start(
            http_options={"host": settings.host, "port": settings.serve_port},
            logging_config=SERVE_LOGGING,
        )
        serve.run(app_builder(args), name=APP_NAME, route_prefix="/", logging_config=SERVE_LOGGING)
        print(f"ray-serve: app {APP_NAME!r} ready at http://{settings.host}:{settings.serve_port}/v1 "
              f"after {time.monotonic() - started:.1f} s (Ray CPUs: {ray_cpus(args)}, temp dir: {temp_dir})",
              flush=True)
        core = ray_core_processes()
        while all(_running(p) for p in core):  # Ray's own core gone: exit, so the stack restarts the service
            time.sleep(CORE_CHECK_S)
        print("ray-serve: Ray's gcs_server or raylet has died; exiting so that the stack restarts the service",
              flush=True)
        code = 1
    except StopRequested:
        clean = True
    except Exception:  # a deployment that failed to start: its traceback is the useful part of the log
        traceback.print_exc()
        _print_deployment_errors()
        code = 1
    finally:
        print("ray-serve: stopping Ray", flush=True)
        _shutdown(temp_dir, clean)
    print("ray-serve: stopped", flush=True)
    sys.stdout.flush()
    os._exit(code)  # do not wait for Ray's non-daemon threads of a cluster that is already gone


if __name__ == "__main__":
    sys.exit(main())
