#!/usr/bin/env python3
"""Fleet simulator for `make bench-apply`: many Redfish BMCs whose simulated hosts install
themselves against a real `metal6 serve`. A load peer for `metal6 apply`: NOT a BMC, NOT a node.

One process, one HTTPS listener per distinct [bmc_address]:bmc_port of NODES.json, each serving
one or more ComputerSystems. Python stdlib only.

Copied, and from where:
  - Redfish from tests/lab/qemu_bmc.py (after notes/dell-idrac-redfish.md): anonymous service
    root; the rest of /redfish/v1 needs HTTP Basic or a live session's X-Auth-Token (else 401 +
    WWW-Authenticate); POST SessionService/Sessions -> 201 + X-Auth-Token + Location, DELETE -> 204;
    PATCH Systems/ID {"Boot"}: Once/Continuous/Disabled, None/Pxe/UefiHttp/Hdd, UEFI only, else
    400 -> 204; Reset On (no-op when On), ForceOff, ForceRestart/PowerCycle (a new boot; from Off
    a power-on) -> 204, else 400. The client is crates/redfish/src/{client,bmc}.rs.
  - A one-time override is consumed by the next boot (Enabled -> Disabled, Target -> None), as
    in qemu_bmc.py and tests/redfish/idrac_sim.py (Redfish ComputerSystem.Boot).
  - The host: a boot with a Pxe/UefiHttp override runs "the installer" after --post-seconds, i.e.
    the HTTP of crates/installer/src/install.rs from the node's own address (serve takes a node's
    requests from its inventory address or with its current ?token=, crates/netboot/src/http):
    POST {"phase": "installer"} without a token (no plan yet); GET plan.json (429 -> wait 1 s);
    token = plan["report"]["token"] (installer/src/plan.rs); GET network; then with ?token=:
    writing-image, progress every 10 % over --install-seconds, image-written {sha256:
    --image-sha256}, configured, installed, reboot. As in write_disk the disk is blank from
    writing-image on and bootable just before `installed`. A disk boot of an installed disk posts
    {"phase": "ready"} with that install's token after --reboot-seconds (installer/src/ready.rs,
    node.json); a blank disk does nothing (it sits in firmware). A failed attempt (no plan, no
    token, another address) posts "failed" and retries after 15 s x attempt (install.rs `run`).
    Requests retry 5 times 0.5 s apart on connection errors and 5xx; events are best effort. A
    ForceOff or a new boot ends the running host at its next step.

What it cannot prove: no DHCPv6 or firmware fetches (no `leased`/`boot-fetch` events: the
installer's first report is the first evidence), no image download (that load is `make
bench-http`'s), no disk, no kernel; PowerState changes at once (real BMCs lag, POST takes
minutes); one fixed --latency-ms; no 503s, session limits, jobs or BIOS. A bench passing with it
shows `metal6 apply` and serve's events API keep up with this many nodes at these timings, not
that a BMC or a node behaves so.

GET /sim/state (no auth) on every listener: {"endpoint": "[addr]:port", "requests", "in_flight",
"peak_in_flight", "sessions_open", "peak_sessions", "sessions_created", "systems": {ID: {"name",
"power_state", "override": {"enabled", "target"}, "disk": "blank"|"installed", "phase" (last
accepted), "power_ons", "power_cycles", "boots", "installs_started", "installs_done", "cluster_joined"}}}.
--latency-ms delays every Redfish answer (not /sim/state) so concurrent clients overlap.
Passwords and tokens are never logged (FLEET_SIM_LOG=1 logs request lines).
"""

import argparse
import base64
import hmac
import http.client
import ipaddress
import json
import os
import re
import resource
import secrets
import signal
import socket
import subprocess
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

R = "/redfish/v1"
SYSTEMS, MANAGERS, MANAGER = R + "/Systems", R + "/Managers", R + "/Managers/1"
SESSION_SERVICE = R + "/SessionService"
SESSIONS = SESSION_SERVICE + "/Sessions"
RESET_SUFFIX = "/Actions/ComputerSystem.Reset"
RESET_TYPES = ["On", "ForceOff", "ForceRestart", "PowerCycle"]
TARGETS = ["None", "Pxe", "UefiHttp", "Hdd"]
WRITABLE = {"BootSourceOverrideEnabled": ["Disabled", "Once", "Continuous"], "BootSourceOverrideTarget": TARGETS,
            "BootSourceOverrideMode": ["UEFI"]}
NETWORK = ("Pxe", "UefiHttp")
REALM = 'Basic realm="metal6-fleet-sim"'
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
IMAGE_BYTES = 2 << 30  # nominal: nothing is downloaded
COUNTERS = ("power_ons", "power_cycles", "boots", "installs_started", "installs_done", "cluster_joined")
A = None  # the arguments
SERVER = None  # (host, port, path ending in /)
STOP = threading.Event()


def log(msg):
    sys.stderr.write(f"fleet_sim: {msg}\n")  # one write: lines of threads do not interleave
    sys.stderr.flush()


def redact(text):
    return re.sub(r"([?&]token=)[^&\s\"']*", r"\1REDACTED", text)


def error(status, message, message_id):
    return status, {"error": {"code": "Base.1.8.GeneralError", "message": message, "@Message.ExtendedInfo": [
        {"MessageId": "Base.1.8." + message_id, "Message": message, "Severity": "Warning"}]}}


def find_token(doc):
    """The install token where the installer reads it (report.token), else any `token` key."""
    rep = doc.get("report") if isinstance(doc, dict) else None
    if isinstance(rep, dict) and isinstance(rep.get("token"), str) and rep["token"]:
        return rep["token"]
    for k, v in doc.items() if isinstance(doc, dict) else enumerate(doc if isinstance(doc, list) else []):
        if k == "token" and isinstance(v, str) and v:
            return v
        if isinstance(v, (dict, list)) and (t := find_token(v)):
            return t
    return None


class System:
    def __init__(self, ep, spec):
        self.lock = ep.lock
        self.id, self.name, self.address, self.mac = spec["system"], spec["name"], spec["address"], spec.get("mac")
        self.path = f"{SYSTEMS}/{self.id}"
        self.power, self.override, self.http_boot_uri = "Off", {"enabled": "Disabled", "target": "None"}, None
        self.disk = None  # once installed: what node.json holds (token, prefix_len, sysctl)
        self.phase = None
        self.boot_stop = threading.Event()  # set when the running boot is over
        self.counters = dict.fromkeys(COUNTERS, 0)

    # --- power, under the endpoint's lock ------------------------------------------------
    def boot(self, cause):
        self.boot_stop.set()
        stop = self.boot_stop = threading.Event()
        self.power = "On"
        self.counters["boots"] += 1
        en, tgt = self.override["enabled"], self.override["target"]
        used = tgt if en in ("Once", "Continuous") and tgt != "None" else None
        if used is not None and en == "Once":
            self.override = {"enabled": "Disabled", "target": "None"}
        run = self.install if used in NETWORK else self.disk_boot if self.disk else None
        log(f"{self.name}: boot {self.counters['boots']} ({cause}, override {used}, "
            f"{'network' if used in NETWORK else 'disk, ' + ('installed' if self.disk else 'blank')})")
        if run is not None:
            threading.Thread(target=run, args=(stop,), daemon=True, name=f"{self.name}-host").start()

    def reset(self, rt):
        if rt == "ForceOff":
            self.boot_stop.set()
            self.power = "Off"
        elif self.power == "Off":
            self.counters["power_ons"] += 1
            self.boot("power-on")
        elif rt != "On":
            self.counters["power_cycles"] += 1
            self.boot(rt)

    def state(self):
        return {"name": self.name, "power_state": self.power, "override": dict(self.override),
                "disk": "installed" if self.disk else "blank", "phase": self.phase, **self.counters}

    def doc(self):
        boot = {"BootSourceOverrideEnabled": self.override["enabled"], "BootSourceOverrideMode": "UEFI",
                "BootSourceOverrideTarget": self.override["target"],
                "BootSourceOverrideTarget@Redfish.AllowableValues": TARGETS,
                "BootSourceOverrideMode@Redfish.AllowableValues": ["UEFI"]}
        if self.http_boot_uri is not None:
            boot["HttpBootUri"] = self.http_boot_uri
        return {"@odata.id": self.path, "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem", "Id": self.id,
                "Name": self.name, "SystemType": "Physical", "Manufacturer": "metal6", "Model": "fleet_sim host",
                "SerialNumber": self.name, "PowerState": self.power, "Status": {"State": "Enabled", "Health": "OK"},
                "Boot": boot, "Links": {"ManagedBy": [{"@odata.id": MANAGER}]},
                "Actions": {"#ComputerSystem.Reset": {"target": self.path + RESET_SUFFIX,
                                                      "ResetType@Redfish.AllowableValues": RESET_TYPES}}}

    def patch(self, body):
        boot = body.get("Boot", {})
        bad = [k for k in body if k != "Boot" and not k.startswith("@odata.")]
        if bad or not isinstance(boot, dict):
            return error(400, f"The property {bad[0] if bad else 'Boot'} cannot be assigned this value.",
                         "PropertyNotWritable")
        for k, v in boot.items():
            if k == "HttpBootUri" and (v is None or isinstance(v, str)):
                continue
            if k not in WRITABLE:
                return error(400, f"The property Boot/{k} is a read only property.", "PropertyNotWritable")
            if v not in WRITABLE[k]:
                return error(400, f"The value {v!r} for the property {k} is not in the list of acceptable values.",
                             "PropertyValueNotInList")
        with self.lock:
            self.override["enabled"] = boot.get("BootSourceOverrideEnabled", self.override["enabled"])
            self.override["target"] = boot.get("BootSourceOverrideTarget", self.override["target"])
            self.http_boot_uri = boot.get("HttpBootUri", self.http_boot_uri)
        return 204, None

    # --- the host: one thread per boot ---------------------------------------------------
    @staticmethod
    def running(stop, seconds=0.0):
        """Waits; False once this boot is over."""
        return not stop.wait(seconds) and not STOP.is_set()

    def call(self, stop, method, path, body=None):
        """One request to serve from the node's address -> (status, bytes); None: gave up or stopped."""
        data = None if body is None else json.dumps(body).encode()
        failures = throttled = 0
        while self.running(stop):
            status, why = None, None
            try:
                conn = http.client.HTTPConnection(SERVER[0], SERVER[1], source_address=(self.address, 0), timeout=30)
                try:
                    conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
                    r = conn.getresponse()
                    status, payload = r.status, r.read()
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException) as e:
                why = f"{type(e).__name__}: {redact(str(e))}"
            if status == 429 and throttled < 120:  # one plan a second per node
                throttled += 1
                stop.wait(1.0)
            elif status is not None and status < 500:
                return status, payload
            elif (failures := failures + 1) > 5:
                log(f"{self.name}: {method} {redact(path)}: giving up: {why or f'HTTP {status}'}")
                return None
            else:
                stop.wait(0.5)
        return None

    def post(self, stop, url, event):
        r = self.call(stop, "POST", url, event)
        if r is not None and r[0] == 202:
            if event.get("kind", "phase") == "phase":
                with self.lock:
                    self.phase = event["phase"]
        elif r is not None:
            log(f"{self.name}: event {event.get('phase')} not accepted: HTTP {r[0]}")

    def install(self, stop, attempt=1):
        """The installer's attempts (install.rs `run`): a failure is reported, the next one waits."""
        while self.running(stop, A.post_seconds if attempt == 1 else min(15 * (attempt - 1), 300)):
            failure = self.install_once(stop, attempt)
            if failure is None or not self.running(stop):
                return
            log(f"{self.name}: install attempt {attempt} failed: {failure[1]}")
            self.post(stop, failure[0], {"phase": "failed", "error": failure[1], "attempt": attempt})
            attempt += 1

    def install_once(self, stop, attempt):
        """None when done or stopped, else (events URL, cause)."""
        t0 = time.monotonic()
        uptime = lambda: round(A.post_seconds + time.monotonic() - t0, 3)  # noqa: E731
        base = f"{SERVER[2]}v1/nodes/{self.name}/"
        events = base + "events"
        with self.lock:
            self.counters["installs_started"] += 1
        ev = {"phase": "installer", "address": self.address, "interface": "sim0", "attempt": attempt,
              "uptime_s": uptime()}
        self.post(stop, events, {**ev, "mac": self.mac} if self.mac else ev)
        r = self.call(stop, "GET", base + "plan.json")
        if r is None or r[0] != 200:
            return None if stop.is_set() else (events, f"GET plan.json: {'no answer' if r is None else r[0]}")
        try:
            plan = json.loads(r[1])
        except ValueError:
            plan = None
        if not isinstance(plan, dict):
            return events, "reading the installer plan: not a JSON object"
        token = find_token(plan)
        net, image, sysctl = (v if isinstance(v, dict) else {} for v in map(plan.get, ("network", "image", "sysctl")))
        if token is None:
            return events, "the plan has no report.token"
        if net.get("address") not in (None, self.address):
            return events, f"the plan says {net.get('address')} but this node is {self.address}"
        if image.get("sha256") not in (None, A.image_sha256):
            log(f"{self.name}: the plan's image sha256 is not --image-sha256 (reporting --image-sha256)")
        r = self.call(stop, "GET", base + "network")
        if r is None or r[0] != 200:
            return None if stop.is_set() else (events, f"GET network: {'no answer' if r is None else r[0]}")
        url = f"{events}?token={token}"
        with self.lock:
            if stop.is_set():
                return None
            self.disk = None  # the installer zeroes the old tables first
        self.post(stop, url, {"phase": "writing-image", "disk": "/dev/vda", "disk_bytes": 2 * IMAGE_BYTES,
                              "url": redact(str(image.get("url")))})
        for pct in range(0, 101, 10):
            if pct and not self.running(stop, A.install_seconds / 10):
                return None
            self.post(stop, url, {"kind": "progress", "phase": "writing-image", "percent": pct,
                                  "bytes": IMAGE_BYTES * pct // 100, "total": IMAGE_BYTES})
        secs = max(A.install_seconds, 1e-3)
        self.post(stop, url, {"phase": "image-written", "bytes": IMAGE_BYTES, "sha256": A.image_sha256,
                              "seconds": secs, "mb_per_s": round(IMAGE_BYTES / 1e6 / secs, 1), "resumes": 0})
        if not self.running(stop):
            return None
        self.post(stop, url, {"phase": "configured", "partition": "/dev/vda2", "address": self.address})
        with self.lock:
            if stop.is_set():
                return None
            self.disk = {"token": token, "prefix_len": net.get("prefix_len", 64),
                         "sysctl": {k: str(v) for k, v in sysctl.items()}}
        self.post(stop, url, {"phase": "installed", "uptime_s": uptime()})
        with self.lock:
            self.counters["installs_done"] += 1
            if not stop.is_set():
                self.boot("reboot")  # the override is spent: the disk boots
        return None

    def disk_boot(self, stop):
        with self.lock:
            disk = self.disk
        if disk is not None and self.running(stop, A.reboot_seconds):
            self.post(stop, f"{SERVER[2]}v1/nodes/{self.name}/events?token={disk['token']}", {
                "phase": "ready", "kernel": "fleet-sim", "uptime_s": A.reboot_seconds,
                "addresses": [{"interface": "sim0", "address": self.address, "prefix_len": disk["prefix_len"],
                               "scope": "global"}],
                "sysctl": disk["sysctl"], "image_sysctl": {}, "sysctl_kept_higher": []})
            if A.cluster_installer:
                self.cluster_unit(stop, disk["token"])

    def cluster_unit(self, stop, token):
        """The installed system's metal6-cluster.service: the real `metal6-installer cluster`
        (fetches the node's files with its token, runs kubeadm — here tests/cluster/kubeadm —
        and reports), restarted on failure like the unit (Restart=on-failure; RestartSec is
        --cluster-retry-seconds here, 10 s in the image), e.g. while the join file is missing."""
        root = os.path.join(A.roots, self.name)
        os.makedirs(root, exist_ok=True)
        node_file = os.path.join(root, "node.json")
        with open(node_file, "w") as f:
            json.dump({"node": self.name, "address": self.address, "token": token, "sysctl": {},
                       "events_url": f"{A.server.rstrip('/')}/v1/nodes/{self.name}/events"}, f)
        env = dict(os.environ, PATH=f"{A.kubeadm_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        for attempt in range(1, 200):
            if stop.is_set():
                return
            r = subprocess.run([A.cluster_installer, "cluster", "--node-file", node_file, "--root", root,
                                "--wait", "10"], env=env, capture_output=True, text=True)
            with open(os.path.join(root, "cluster.log"), "a") as log_f:
                log_f.write(f"--- attempt {attempt}: exit {r.returncode}\n{r.stdout}{r.stderr}")
            if r.returncode == 0:
                with self.lock:
                    self.counters["cluster_joined"] += 1
                return
            if not self.running(stop, A.cluster_retry_seconds):
                return


class Endpoint:
    def __init__(self, addr, port):
        self.addr, self.port, self.name = addr, port, f"[{addr}]:{port}"
        self.lock = threading.RLock()
        self.systems = {}
        self.sessions = {}  # token -> session id
        self.c = dict.fromkeys(("requests", "in_flight", "peak_in_flight", "sessions_created", "peak_sessions"), 0)

    def state(self):
        with self.lock:
            return {"endpoint": self.name, **self.c, "sessions_open": len(self.sessions),
                    "systems": {i: s.state() for i, s in self.systems.items()}}

    def get(self, path):
        def coll(p, name, ms):
            return {"@odata.id": p, "Name": name, "Members": [{"@odata.id": m} for m in ms],
                    "Members@odata.count": len(ms)}
        with self.lock:
            s = self.systems.get(path[len(SYSTEMS) + 1:]) if path.startswith(SYSTEMS + "/") else None
            if s is not None:
                return s.doc()
            return {
                SYSTEMS: lambda: coll(SYSTEMS, "Computer System Collection", [s.path for s in self.systems.values()]),
                MANAGERS: lambda: coll(MANAGERS, "Manager Collection", [MANAGER]),
                MANAGER: lambda: {
                    "@odata.id": MANAGER, "@odata.type": "#Manager.v1_10_0.Manager", "Id": "1",
                    "Name": f"{self.name} BMC", "ManagerType": "BMC", "FirmwareVersion": "metal6-fleet-sim",
                    "Links": {"ManagerForServers": [{"@odata.id": s.path} for s in self.systems.values()]}},
                SESSION_SERVICE: lambda: {
                    "@odata.id": SESSION_SERVICE, "@odata.type": "#SessionService.v1_1_8.SessionService",
                    "Id": "SessionService", "Name": "Session Service", "ServiceEnabled": True,
                    "SessionTimeout": 1800, "Sessions": {"@odata.id": SESSIONS}},
                SESSIONS: lambda: coll(SESSIONS, "Session Collection",
                                       [f"{SESSIONS}/{i}" for i in sorted(self.sessions.values())]),
            }.get(path, lambda: None)()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "metal6-fleet-sim"
    sys_version = ""
    timeout = 120

    def log_message(self, fmt, *a):
        if os.environ.get("FLEET_SIM_LOG"):  # the request line holds no credential
            sys.stderr.write(f"fleet_sim: {self.server.ep.name}: {fmt % a}\n")

    def send(self, status, body=None, headers=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("OData-Version", "4.0")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def read_body(self):
        """The JSON object sent, {} for none, None for anything else."""
        n = self.headers.get("Content-Length") or "0"
        raw = self.rfile.read(int(n)) if n.isdigit() else b""
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    @staticmethod
    def credentials_ok(user, pw):
        u = hmac.compare_digest(user, A.user.encode())
        return hmac.compare_digest(pw, A.password.encode()) and u

    def authorized(self):
        ep = self.server.ep
        tok = self.headers.get("X-Auth-Token")
        if tok:
            with ep.lock:
                if tok in ep.sessions:
                    return True
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                user, sep, pw = base64.b64decode(auth[6:].strip(), validate=True).partition(b":")
            except ValueError:
                return False
            return bool(sep) and self.credentials_ok(user, pw)
        return False

    def handle_any(self, method):
        ep = self.server.ep
        path = urllib.parse.urlsplit(self.path).path.rstrip("/") or "/"
        body = self.read_body() if method != "GET" else {}
        if path == "/sim/state":
            if method != "GET":
                return self.send(*error(405, "GET only", "OperationNotAllowed"), {"Allow": "GET"})
            return self.send(200, ep.state())
        with ep.lock:
            ep.c["requests"] += 1
            ep.c["in_flight"] += 1
            ep.c["peak_in_flight"] = max(ep.c["peak_in_flight"], ep.c["in_flight"])
        try:
            time.sleep(A.latency_ms / 1000)
            self.send(*self.redfish(method, path, body))
        finally:
            with ep.lock:
                ep.c["in_flight"] -= 1

    def redfish(self, method, path, body):
        ep = self.server.ep
        missing = error(404, f"The resource at the URI {path} was not found.", "ResourceMissingAtURI")
        if body is None:
            return error(400, "The request body is not a valid JSON object.", "MalformedJSON")
        if path == R and method == "GET":
            return 200, {"@odata.id": R + "/", "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot", "Id": "RootService",
                         "Name": "metal6 fleet simulator", "RedfishVersion": "1.8.0", "Vendor": "metal6-fleet-sim",
                         "Product": "fleet_sim.py", "Systems": {"@odata.id": SYSTEMS},
                         "Managers": {"@odata.id": MANAGERS}, "SessionService": {"@odata.id": SESSION_SERVICE},
                         "Links": {"Sessions": {"@odata.id": SESSIONS}}}
        if method == "POST" and path == SESSIONS:
            return self.login(body)
        if not path.startswith(R + "/"):
            return missing if path != R else error(405, f"{method} is not allowed", "OperationNotAllowed")
        if not self.authorized():
            return (*error(401, "No valid credentials or session.", "NoValidSession"), {"WWW-Authenticate": REALM})
        system = ep.systems.get(path[len(SYSTEMS) + 1:].split("/")[0]) if path.startswith(SYSTEMS + "/") else None
        if method == "GET":
            doc = ep.get(path)
            return missing if doc is None else (200, doc)
        if method == "PATCH" and system is not None and path == system.path:
            return system.patch(body)
        if method == "POST" and system is not None and path == system.path + RESET_SUFFIX:
            rt = body.get("ResetType")
            if rt not in RESET_TYPES:
                return error(400, f"The parameter ResetType for the action ComputerSystem.Reset does not support "
                             f"the value {rt!r}.", "ActionParameterNotSupported" if rt else "ActionParameterMissing")
            with ep.lock:
                system.reset(rt)
            return 204, None
        if method == "DELETE" and path.startswith(SESSIONS + "/"):
            with ep.lock:
                for tok, i in list(ep.sessions.items()):
                    if str(i) == path[len(SESSIONS) + 1:]:
                        del ep.sessions[tok]
                        return 204, None
            return missing
        if ep.get(path) is not None or (system is not None and path == system.path + RESET_SUFFIX):
            return error(405, f"{method} is not allowed on {path}", "OperationNotAllowed")
        return missing

    def login(self, body):
        ep = self.server.ep
        user, pw = body.get("UserName"), body.get("Password")
        if not isinstance(user, str) or not isinstance(pw, str) or not self.credentials_ok(user.encode(), pw.encode()):
            return error(401, "Invalid user name or password.", "NoValidSession")
        token = secrets.token_hex(16)
        with ep.lock:
            ep.c["sessions_created"] += 1
            sid = ep.c["sessions_created"]
            ep.sessions[token] = sid
            ep.c["peak_sessions"] = max(ep.c["peak_sessions"], len(ep.sessions))
        loc = f"{SESSIONS}/{sid}"
        return (201, {"@odata.id": loc, "@odata.type": "#Session.v1_3_0.Session", "Id": str(sid),
                      "Name": f"Session {sid}", "UserName": user}, {"X-Auth-Token": token, "Location": loc})

    def do_GET(self):
        self.handle_any("GET")

    do_HEAD = do_GET
    do_POST, do_PATCH, do_DELETE = (lambda self, m=m: self.handle_any(m) for m in ("POST", "PATCH", "DELETE"))


class EndpointServer(ThreadingHTTPServer):
    """One BMC listener; TLS is set up in the request's thread (a slow handshake holds no one up)."""

    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, ep, ctx):
        self.ep, self.ctx = ep, ctx
        super().__init__((ep.addr, ep.port), Handler)

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def finish_request(self, request, client_address):
        request.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except OSError:  # ssl.SSLError is one
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except OSError:
            pass
        finally:
            try:
                tls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            tls.close()

    def handle_error(self, request, client_address):
        log(f"{self.ep.name}: error serving {client_address[0]}: {sys.exc_info()[1]!r}")


def load_nodes(path):
    with open(path, encoding="utf-8") as f:
        specs = json.load(f)
    if not isinstance(specs, list) or not specs:
        raise SystemExit(f"{path}: expected a non-empty JSON list")
    endpoints, names = {}, set()
    for n in specs:
        if not isinstance(n, dict) or any(k not in n for k in ("name", "address", "bmc_address", "bmc_port", "system")):
            raise SystemExit(f"{path}: {n!r}: needs name, address, bmc_address, bmc_port, system")
        n["system"] = str(n["system"])
        if not NAME_RE.fullmatch(str(n["name"])) or n["name"] in names or not NAME_RE.fullmatch(n["system"]):
            raise SystemExit(f"{path}: bad or repeated node name or bad system Id in {n!r}")
        names.add(n["name"])
        try:
            n["address"] = str(ipaddress.IPv6Address(str(n["address"]).strip("[]")))
            key = (str(ipaddress.IPv6Address(str(n["bmc_address"]).strip("[]"))), int(n["bmc_port"]))
            if not 0 < key[1] < 65536:
                raise ValueError(f"bad bmc_port {key[1]}")
        except ValueError as e:
            raise SystemExit(f"{path}: {n['name']}: {e}") from None
        ep = endpoints.setdefault(key, Endpoint(*key))
        if n["system"] in ep.systems:
            raise SystemExit(f"{path}: {n['name']}: {ep.name} already has a system {n['system']}")
        ep.systems[n["system"]] = System(ep, n)
    return list(endpoints.values())


def check_source(address, deadline):
    """A node's address is its requests' source: it must be bindable here (not tentative)."""
    while True:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            try:
                return s.bind((address, 0))
            except OSError as e:
                if time.monotonic() > deadline:
                    raise SystemExit(f"node address {address} cannot be bound here ({e}): add it (nodad)") from None
        time.sleep(0.2)


def main():
    global A, SERVER
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cert", required=True, help="PEM certificate for every listener")
    p.add_argument("--key", required=True, help="its PEM key")
    p.add_argument("--user", default="admin")
    p.add_argument("--password-file", required=True, help="the password (surrounding white space is dropped)")
    p.add_argument("--nodes", required=True, metavar="NODES.json",
                   help='[{"name", "address", "bmc_address", "bmc_port", "system"[, "mac"]}, ...]')
    p.add_argument("--server", required=True, help="metal6 serve's base URL, http://[addr]:port/")
    p.add_argument("--image-sha256", required=True, help="what image-written reports")
    p.add_argument("--latency-ms", type=int, default=50, help="every Redfish answer takes this long (default 50)")
    p.add_argument("--post-seconds", type=float, default=1.0, help="firmware POST before the installer runs")
    p.add_argument("--install-seconds", type=float, default=2.0, help="writing-image to image-written")
    p.add_argument("--reboot-seconds", type=float, default=1.0, help="a disk boot until ready")
    p.add_argument("--cluster-installer", help="after ready, run this metal6-installer's `cluster` step as the "
                   "node's cluster unit would (needs --roots and --kubeadm-dir)")
    p.add_argument("--kubeadm-dir", default="", help="a directory with `kubeadm` (the simulator) put first on PATH")
    p.add_argument("--roots", default="", help="each node's root directory for the cluster step: ROOTS/NAME")
    p.add_argument("--cluster-retry-seconds", type=float, default=2.0, help="the cluster unit's RestartSec")
    A = p.parse_args()
    if not re.fullmatch(r"[0-9a-fA-F]{64}", A.image_sha256):
        raise SystemExit("--image-sha256: expected 64 hex digits")
    A.image_sha256 = A.image_sha256.lower()
    with open(A.password_file, encoding="utf-8") as f:
        A.password = f.read().strip()
    if not A.password:
        raise SystemExit(f"{A.password_file} is empty")
    u = urllib.parse.urlsplit(A.server)
    if u.scheme != "http" or not u.hostname:
        raise SystemExit("--server: expected http://[addr]:port/")
    SERVER = (u.hostname, u.port or 80, u.path if u.path.endswith("/") else u.path + "/")
    endpoints = load_nodes(A.nodes)
    deadline = time.monotonic() + 5
    for ep in endpoints:
        for s in ep.systems.values():
            check_source(s.address, deadline)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a socket per BMC client and per host request
    threading.stack_size(512 * 1024)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(A.cert, A.key)
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    servers = []
    for ep in endpoints:
        try:
            servers.append(EndpointServer(ep, ctx))
        except OSError as e:
            raise SystemExit(f"cannot listen on {ep.name}: {e}") from None
        threading.Thread(target=servers[-1].serve_forever, daemon=True, name=f"bmc-{ep.name}").start()
    print(f"fleet_sim: {len(endpoints)} BMCs, {sum(len(ep.systems) for ep in endpoints)} systems", flush=True)
    print("fleet_sim: ready", flush=True)
    while not STOP.wait(1):
        pass
    log("stopping")
    for s in servers:
        s.server_close()


if __name__ == "__main__":
    main()
