#!/usr/bin/env python3
"""iDRAC-semantics simulator: a test peer for `metal6 bmc`, NOT an iDRAC.

It serves the real iDRAC9 R750 capture (fixtures/idrac9-r750, Redfish Mockup Creator, iDRAC
6.00.30.00) for reads and adds the stateful Dell behaviour no emulator has: sessions, BIOS
pending values and config jobs, resets that run jobs, SimpleUpdate tasks. Every behaviour
below names where it is copied from (notes/dell-idrac-redfish.md and the issues it cites);
anything else is a plain mockup answer. Python stdlib only; HTTPS with the given cert.

Behaviours (quirk flags in brackets are off by default):
  - Sessions: POST SessionService/Sessions -> 201 + X-Auth-Token + Location; DELETE ends it
    (notes §1). Basic auth also works. The service root is anonymous.
  - PATCH Bios/Settings with @Redfish.SettingsApplyTime -> values pending + a BIOS config job,
    202 + Location .../Oem/Dell/Jobs/JID_<12 digits> (notes §3A, Dell GetSetBiosAttributes).
    --job-style two-step: PATCH -> 200 pending only; POST Oem/Dell/Jobs {TargetSettingsURI}
    -> 200 + Location, 400 "No pending data present to create a Configuration job" when
    nothing is pending (notes §3B).
  - A second stage while a config job exists -> 400 SYS011 "Pending configuration values are
    already committed..." (quadsproject/quads#726, iDRAC-Redfish-Scripting#249).
  - An attribute read-only under the current values (registry Dependencies, OR of MapFrom
    conditions) -> 400 SYS410 (dsx-ai-factory/libredfish#75).
  - DeleteJobQueue JID_CLEARALL deletes jobs; Bios/Settings ClearPending drops pending values.
  - Reset when a config job is scheduled: Scheduled -> Running -> Completed (PR19) over ~1.5 s
    (--job-seconds sets how long Running lasts: a real BIOS job runs through POST, minutes),
    pending values become current, with the registry's forced values (SysProfile ->
    ProcCStates ...) applied (notes §4).
  - A one-time boot override is consumed by the next boot (Enabled -> Disabled).
  - SimpleUpdate downloads ImageURI (from metal6 serve), makes a task JID: Downloading ->
    Scheduled (BIOS, NIC: needs a host reset) or -> Completed after a BMC restart with 503s
    and every session forgotten (iDRAC; notes §1: "expect connection errors, 401 and 503");
    the version comes from the DUP file name (notes §9).
  [--quirk reboot-pending]   a scheduled update reports JobState RebootPending instead of
                             Scheduled ("completed, reboot pending", notes §9)
  - If-Match on an action POST -> 412 (ironcore-dev/metal-operator#1015).
  - POST Systems/.../Boot/Certificates {CertificateString, CertificateType: PEM} -> 201 +
    Location of a new member that lists the PEM: the DMTF CertificateCollection semantics the
    capture's collection ("A Collection of BIOS HTTP Boot Certificate resource instances",
    empty in the capture) declares. Not copied from a real iDRAC: whether Dell applies it at
    once or with the next BIOS job is not known here; a non-PEM body -> 400.
  [--quirk no-location]      the BIOS PATCH creates the job but answers 200 without Location
                             (dsx-ai-factory/libredfish#97)
  [--quirk stuck-pr30]       a reset leaves the job Scheduled with PR30 "Job processing
                             initialization failure." for ever (notes §4)
  [--quirk ignore=ATTR]      the job completes but ATTR keeps its old value ("no delta",
                             dellemc-openmanage-ansible-modules#495)
  [--quirk busy-after-reset=S] every request gets 503 for S seconds after a reset (BMC busy)
  [--quirk job=TYPE]         a Scheduled job of JobType TYPE (e.g. RAIDConfiguration, or a stale
                             BIOSConfiguration) is in the queue at start: someone else's work

GET /sim/state (no auth) shows sessions, jobs, pending values and counters for tests.
"""

import argparse
import base64
import copy
import json
import os
import random
import re
import secrets
import ssl
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

R = "/redfish/v1"
SYSTEM = R + "/Systems/System.Embedded.1"
BIOS = SYSTEM + "/Bios"
SETTINGS = BIOS + "/Settings"
MANAGER = R + "/Managers/iDRAC.Embedded.1"
DELL_JOBS = MANAGER + "/Oem/Dell/Jobs"
FW = R + "/UpdateService/FirmwareInventory"
BOOT_CERTS = SYSTEM + "/Boot/Certificates"


class State:
    def __init__(self, fixture, args):
        self.fixture = fixture
        self.args = args
        self.lock = threading.RLock()
        self.overlay = {}  # path -> document, for everything that changed
        self.sessions = {}  # token -> session path
        self.sessions_created = 0
        self.sessions_deleted = 0
        self.peak_sessions = 0  # sessions open at once, at most (a client's per-BMC limit)
        self.counters = {"if_match_on_action": 0, "requests": 0, "resets": []}
        self.jobs = {}  # JID -> Dell job document
        self.pending = {}
        self.busy_until = 0.0
        self.registry = self.read(BIOS + "/BiosRegistry")["RegistryEntries"]
        self.attr_defs = {a["AttributeName"]: a for a in self.registry["Attributes"]}
        self.quirks = {}
        for q in args.quirk:
            k, _, v = q.partition("=")
            self.quirks.setdefault(k, []).append(v)
        for job_type in self.quirks.get("job", []):
            self.new_job(job_type, f"Configure: {job_type} (queued before the test)")

    # --- documents ---------------------------------------------------------------------
    def read(self, path):
        if path in self.overlay:
            return self.overlay[path]
        rel = path[1:] if path.startswith("/") else path
        f = os.path.join(self.fixture, rel, "index.json")
        if not os.path.isfile(f):
            return None
        with open(f, encoding="utf-8") as fh:
            return json.load(fh)

    def doc(self, path):
        """A mutable copy kept in the overlay."""
        if path not in self.overlay:
            d = self.read(path)
            if d is None:
                return None
            self.overlay[path] = copy.deepcopy(d)
        return self.overlay[path]

    def get(self, path):
        if path == DELL_JOBS:
            base = self.read(DELL_JOBS)
            members = [m for m in base["Members"]] + [{"@odata.id": f"{DELL_JOBS}/{j}"} for j in self.jobs]
            return dict(base, Members=members, **{"Members@odata.count": len(members)})
        for view in (DELL_JOBS + "/", R + "/JobService/Jobs/", R + "/TaskService/Tasks/"):
            if path.startswith(view) and path[len(view):] in self.jobs:
                return self.job_view(view, self.jobs[path[len(view):]])
        if path == SETTINGS:
            d = copy.deepcopy(self.read(SETTINGS))
            d["Attributes"] = dict(self.pending)
            return d
        return self.read(path)

    def job_view(self, view, job):
        if view.startswith(DELL_JOBS):
            return job
        if "TaskService" in view:
            state = {"Completed": "Completed", "Failed": "Exception"}.get(job["JobState"], "Running")
            return {"@odata.id": view + job["Id"], "Id": job["Id"], "TaskState": state,
                    "PercentComplete": job["PercentComplete"],
                    "Messages": [{"Message": job["Message"], "MessageId": job["MessageId"]}],
                    "Oem": {"Dell": dict(job)}}
        return {"@odata.id": view + job["Id"], "Id": job["Id"], "JobState": job["JobState"],
                "PercentComplete": job["PercentComplete"],
                "Messages": [{"Message": job["Message"], "MessageId": "IDRAC.2.7." + job["MessageId"]}]}

    # --- BIOS --------------------------------------------------------------------------
    def current(self):
        return self.doc(BIOS)["Attributes"]

    def matches(self, rule, values):
        hit = False
        for c in rule["MapFrom"]:
            cur = values.get(c["MapFromAttribute"])
            h = (cur == c["MapFromValue"]) if c["MapFromCondition"] == "EQU" else (cur != c["MapFromValue"])
            hit = (hit and h) if c.get("MapTerms") == "AND" else (hit or h)
        return hit

    def read_only(self, attr, values):
        rules = [d["Dependency"] for d in self.registry["Dependencies"]
                 if d["Dependency"]["MapToAttribute"] == attr and d["Dependency"]["MapToProperty"] == "ReadOnly"]
        if not rules:
            return self.attr_defs[attr].get("ReadOnly", False)
        return any(r["MapToValue"] is True and self.matches(r, values) for r in rules)

    def apply_forced(self, values):
        for d in self.registry["Dependencies"]:
            r = d["Dependency"]
            if r["MapToProperty"] == "CurrentValue" and self.matches(r, values):
                values[r["MapToAttribute"]] = r["MapToValue"]

    def new_job(self, job_type, name):
        jid = "JID_%012d" % random.randrange(10**11, 10**12)
        self.jobs[jid] = {"@odata.id": f"{DELL_JOBS}/{jid}", "Id": jid, "JobType": job_type,
                          "JobState": "Scheduled", "Message": "Task successfully scheduled.",
                          "MessageId": "JCP001", "Name": name, "PercentComplete": 0,
                          "StartTime": "TIME_NOW", "EndTime": "TIME_NA", "TargetSettingsURI": None}
        return jid

    def open_config_job(self):
        return next((j for j in self.jobs.values() if j["JobType"] == "BIOSConfiguration"
                     and j["JobState"] in ("Scheduled", "Running")), None)


def error(status, message, message_id):
    return status, {"error": {"code": "Base.1.12.GeneralError", "message": message,
                              "@Message.ExtendedInfo": [{"Message": message, "MessageId": message_id,
                                                         "Severity": "Warning"}]}}, {}


def ok_info(message="The request completed successfully.", message_id="Base.1.12.Success"):
    return {"@Message.ExtendedInfo": [{"Message": message, "MessageId": message_id, "Severity": "OK"}]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    st: State = None

    def log_message(self, fmt, *a):
        if os.environ.get("IDRAC_SIM_LOG"):
            super().log_message(fmt, *a)

    def send(self, status, body=None, headers=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;odata.metadata=minimal;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return None

    def authorized(self):
        st = self.st
        tok = self.headers.get("X-Auth-Token")
        if tok and tok in st.sessions:
            return True
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return False
            return user == st.args.user and pw == st.args.password
        return False

    def handle_any(self, method):
        st = self.st
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        # Fixture folders named with a query (`DellSensors?$skip=50`) are served literally.
        if url.query.startswith("$skip="):
            path = f"{path}?{url.query}"
        body = self.body() if method in ("POST", "PATCH") else {}
        with st.lock:
            st.counters["requests"] += 1
            if path == "/sim/state":
                return self.send(200, {"sessions_open": len(st.sessions), "sessions_created": st.sessions_created,
                                       "sessions_deleted": st.sessions_deleted, "peak_sessions": st.peak_sessions,
                                       "jobs": st.jobs,
                                       "pending": st.pending, "counters": st.counters,
                                       "bios": {k: st.current().get(k) for k in sorted(st.current())}})
            if time.time() < st.busy_until:
                return self.send(*error(503, "iDRAC is restarting.", "Base.1.12.ServiceTemporarilyUnavailable")[:2])
            if body is None:
                return self.send(*error(400, "The request body is not valid JSON.", "Base.1.12.MalformedJSON")[:2])
            if path in (R, "/redfish"):
                return self.send(200, st.get(R))
            if method == "POST" and path == R + "/SessionService/Sessions":
                return self.login(body)
            if not self.authorized():
                return self.send(401, {"error": {"message": "Unauthorized", "code": "Base.1.12.NoValidSession"}})
            if "/Actions/" in path and method == "POST" and self.headers.get("If-Match"):
                st.counters["if_match_on_action"] += 1
                return self.send(*error(412, "If-Match is not supported on actions.", "Base.1.12.PreconditionFailed")[:2])
            status, doc, headers = self.route(method, path, body)
            self.send(status, doc, headers)

    def login(self, body):
        st = self.st
        if body.get("UserName") != st.args.user or body.get("Password") != st.args.password:
            return self.send(401, {"error": {"message": "Invalid credentials", "code": "Base.1.12.NoValidSession"}})
        st.sessions_created += 1
        token = secrets.token_hex(16)
        loc = f"{R}/SessionService/Sessions/{st.sessions_created + 300}"
        st.sessions[token] = loc
        st.peak_sessions = max(st.peak_sessions, len(st.sessions))
        return self.send(201, {"@odata.id": loc, "Id": loc.rsplit("/", 1)[1], "UserName": body["UserName"]},
                         {"X-Auth-Token": token, "Location": loc})

    def route(self, method, path, body):
        st = self.st
        if method == "GET":
            d = st.get(path)
            return (200, d, {}) if d is not None else error(404, f"{path} not found", "Base.1.12.ResourceMissingAtURI")
        if method == "DELETE" and path.startswith(R + "/SessionService/Sessions/"):
            for tok, loc in list(st.sessions.items()):
                if loc == path:
                    del st.sessions[tok]
                    st.sessions_deleted += 1
                    return 200, ok_info(), {}
            return error(404, "no such session", "Base.1.12.ResourceMissingAtURI")
        if method == "PATCH" and path == SETTINGS:
            return self.stage(body)
        if method == "PATCH" and path == SYSTEM:
            return self.boot_override(body)
        if method == "POST" and path == DELL_JOBS:
            return self.create_job(body)
        if method == "POST" and path == SETTINGS + "/Actions/Oem/DellManager.ClearPending":
            st.pending.clear()
            return 200, ok_info(), {}
        if method == "POST" and path.endswith("/DellJobService.DeleteJobQueue"):
            if body.get("JobID") not in ("JID_CLEARALL",) and body.get("JobID") not in st.jobs:
                return error(400, "Invalid JobID", "SUP011")
            if body["JobID"] == "JID_CLEARALL":
                st.jobs.clear()
            else:
                del st.jobs[body["JobID"]]
            return 200, ok_info("Successfully deleted the job(s).", "IDRAC.2.7.SUP020"), {}
        if method == "POST" and path == SYSTEM + "/Actions/ComputerSystem.Reset":
            return self.reset(body)
        if method == "POST" and path == R + "/UpdateService/Actions/UpdateService.SimpleUpdate":
            return self.simple_update(body)
        if method == "POST" and path == BOOT_CERTS:
            return self.add_boot_cert(body)
        return error(405, f"{method} is not supported on {path}", "Base.1.12.OperationNotAllowed")

    def add_boot_cert(self, body):
        st = self.st
        pem = body.get("CertificateString") or ""
        if body.get("CertificateType") != "PEM" or "-----BEGIN CERTIFICATE-----" not in pem:
            return error(400, "The value for CertificateString is not a PEM certificate.",
                         "Base.1.12.PropertyValueFormatError")
        coll = st.doc(BOOT_CERTS)
        n = len(coll["Members"]) + 1
        path = f"{BOOT_CERTS}/HttpBootCert.{n}"
        st.overlay[path] = {"@odata.id": path, "@odata.type": "#Certificate.v1_5_0.Certificate",
                            "Id": f"HttpBootCert.{n}", "Name": "BIOS HTTP Boot Certificate",
                            "CertificateString": pem.replace("\r\n", "\n"), "CertificateType": "PEM"}
        coll["Members"].append({"@odata.id": path})
        coll["Members@odata.count"] = len(coll["Members"])
        st.counters["boot_certs_added"] = st.counters.get("boot_certs_added", 0) + 1
        return 201, st.overlay[path], {"Location": path}

    # --- BIOS staging ------------------------------------------------------------------
    def validate(self, attrs):
        st = self.st
        cur = st.current()
        for k, v in attrs.items():
            d = st.attr_defs.get(k)
            if d is None:
                return error(400, f"The property {k} is not in the list of valid properties for the resource.",
                             "Base.1.12.PropertyUnknown")
            if st.read_only(k, cur):
                return error(400, f"Unable to modify the attribute {k} because it is read-only and depends on "
                             "other attributes.", "IDRAC.2.8.SYS410")
            if d["Type"] == "Enumeration" and v not in [x["ValueName"] for x in d.get("Value", [])]:
                return error(400, f"The value {v} for the property {k} is not in the list of acceptable values.",
                             "Base.1.12.PropertyValueNotInList")
        return None

    def stage(self, body):
        st = self.st
        attrs = body.get("Attributes") or {}
        if st.open_config_job():
            return error(400, "Pending configuration values are already committed, unable to perform another "
                         "set operation.", "IDRAC.2.8.SYS011")
        bad = self.validate(attrs)
        if bad:
            return bad
        st.pending.update(attrs)
        if st.args.job_style == "two-step" or "@Redfish.SettingsApplyTime" not in body:
            return 200, ok_info("Successfully Completed Request", "Base.1.12.Success"), {}
        jid = st.new_job("BIOSConfiguration", "Configure: BIOS.Setup.1-1")
        if "no-location" in st.quirks:
            return 200, ok_info(), {}
        return 202, ok_info(), {"Location": f"{DELL_JOBS}/{jid}"}

    def create_job(self, body):
        st = self.st
        if body.get("TargetSettingsURI") != SETTINGS:
            return error(400, "Invalid TargetSettingsURI", "SUP024")
        if st.open_config_job():
            return error(400, "Pending configuration values are already committed, unable to perform another "
                         "set operation.", "IDRAC.2.8.SYS011")
        if not st.pending:
            return error(400, "No pending data present to create a Configuration job.", "IDRAC.2.8.SUP017")
        jid = st.new_job("BIOSConfiguration", "Configure: BIOS.Setup.1-1")
        return 200, ok_info(), {"Location": f"{DELL_JOBS}/{jid}"}

    def boot_override(self, body):
        st = self.st
        boot = body.get("Boot") or {}
        sysdoc = st.doc(SYSTEM)
        allowed = sysdoc["Boot"]["BootSourceOverrideTarget@Redfish.AllowableValues"]
        t = boot.get("BootSourceOverrideTarget")
        if t is not None and t not in allowed:
            return error(400, f"The value {t} for BootSourceOverrideTarget is not acceptable.",
                         "Base.1.12.PropertyValueNotInList")
        for k in ("BootSourceOverrideTarget", "BootSourceOverrideEnabled", "BootSourceOverrideMode"):
            if k in boot:
                sysdoc["Boot"][k] = boot[k]
        return 200, ok_info(), {}

    # --- power, jobs, firmware ---------------------------------------------------------
    def reset(self, body):
        st = self.st
        sysdoc = st.doc(SYSTEM)
        rt = body.get("ResetType")
        if rt not in sysdoc["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"]:
            return error(400, f"ResetType {rt} is not supported", "Base.1.12.ActionParameterValueNotInList")
        st.counters["resets"].append(rt)
        was = sysdoc["PowerState"]
        if rt in ("ForceOff", "GracefulShutdown"):
            sysdoc["PowerState"] = "Off"
            return 204, None, {}
        if rt == "On" and was == "On":
            return error(409, "The server is already powered on.", "IDRAC.2.8.PSU501")
        sysdoc["PowerState"] = "On"
        self.boot()
        for s in st.quirks.get("busy-after-reset", []):
            st.busy_until = time.time() + float(s or 2)
        return 204, None, {}

    def boot(self):
        """The host boots: run scheduled jobs (in a thread, so polling sees the states)."""
        st = self.st
        sysdoc = st.doc(SYSTEM)
        if sysdoc["Boot"].get("BootSourceOverrideEnabled") == "Once":
            sysdoc["Boot"]["BootSourceOverrideEnabled"] = "Disabled"
            sysdoc["Boot"]["BootSourceOverrideTarget"] = "None"
        for job in list(st.jobs.values()):
            if job["JobState"] in ("Scheduled", "RebootPending"):
                threading.Thread(target=self.run_job, args=(job,), daemon=True).start()

    def run_job(self, job):
        st = self.st
        time.sleep(0.4)
        with st.lock:
            if "stuck-pr30" in st.quirks:
                job.update(Message="Job processing initialization failure.", MessageId="PR30")
                return
            job.update(JobState="Running", Message="Job in progress.", MessageId="PR20", PercentComplete=50)
        time.sleep(st.args.job_seconds)
        with st.lock:
            if job["JobType"] == "BIOSConfiguration":
                cur = st.current()
                ignored = set(st.quirks.get("ignore", []))
                cur.update({k: v for k, v in st.pending.items() if k not in ignored})
                st.apply_forced(cur)
                st.pending.clear()
            elif job["JobType"] == "FirmwareUpdate":
                self.install(job)
            job.update(JobState="Completed", Message="Job completed successfully.", MessageId="PR19",
                       PercentComplete=100, EndTime="TIME_NOW")

    def simple_update(self, body):
        st = self.st
        uri = body.get("ImageURI")
        if not uri or body.get("TransferProtocol", "HTTP") not in ("HTTP", "HTTPS"):
            return error(400, "ImageURI and an HTTP TransferProtocol are required", "Base.1.12.ActionParameterMissing")
        m = re.search(r"/([A-Za-z-]+)[^/]*?_(\d+(?:\.\d+)+)(?:_A\d+)?\.EXE$", uri)
        if not m:
            return error(400, f"{uri} is not a Dell Update Package name", "RED004")
        jid = st.new_job("FirmwareUpdate", "Firmware Update: " + m.group(1))
        job = st.jobs[jid]
        job.update(JobState="Downloading", Message="Package download in progress.", MessageId="RED003")
        job["_component"] = m.group(1)
        job["_version"] = m.group(2)
        threading.Thread(target=self.download, args=(job, uri), daemon=True).start()
        return 202, ok_info(), {"Location": f"{R}/TaskService/Tasks/{jid}"}

    def download(self, job, uri):
        st = self.st
        try:
            with urllib.request.urlopen(uri, timeout=30) as r:
                size = len(r.read())
        except OSError as e:
            with st.lock:
                job.update(JobState="Failed", Message=f"Unable to download the package: {e}", MessageId="RED017")
            return
        with st.lock:
            job["_bytes"] = size
            if job["_component"].lower().startswith("idrac"):
                # iDRAC installs right away and restarts itself: 503s meanwhile (notes §1).
                job.update(JobState="Running", Message="Firmware update in progress.", MessageId="RED007")
                st.busy_until = time.time() + 1.5
                # The restarted BMC has forgotten every session (clients must log in again).
                st.sessions.clear()
                self.install(job)
                job.update(JobState="Completed", Message="The specified job has completed successfully.",
                           MessageId="RED001", PercentComplete=100)
            elif "reboot-pending" in st.quirks:
                job.update(JobState="RebootPending", Message="Reboot is required to complete the update.",
                           MessageId="RED030", PercentComplete=100)
            else:
                job.update(JobState="Scheduled", Message="Task successfully scheduled.", MessageId="JCP001")

    def install(self, job):
        st = self.st
        comp, version = job["_component"].lower(), job["_version"]
        fqdd = {"bios": "BIOS.Setup.1-1", "idrac-with-lifecycle-controller": "iDRAC.Embedded.1-1"}.get(comp)
        coll = st.doc(FW)
        for m in list(coll["Members"]):
            mid = m["@odata.id"].rsplit("/", 1)[1]
            if not mid.startswith("Installed-"):
                continue
            if fqdd is None and comp == "network" and "__NIC.Integrated" not in mid:
                continue
            if fqdd is not None and not mid.endswith("__" + fqdd):
                continue
            old = st.read(m["@odata.id"])
            new_id = re.sub(r"^Installed-(\d+)-[^_]+__", lambda g: f"Installed-{g.group(1)}-{version}__", mid)
            new = dict(old, Id=new_id, Version=version, **{"@odata.id": f"{FW}/{new_id}"})
            st.overlay[f"{FW}/{new_id}"] = new
            m["@odata.id"] = f"{FW}/{new_id}"
            if comp == "bios":
                st.doc(SYSTEM)["BiosVersion"] = version
            if fqdd == "iDRAC.Embedded.1-1":
                st.doc(MANAGER)["FirmwareVersion"] = version

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")


class Server(ThreadingHTTPServer):
    address_family = __import__("socket").AF_INET6
    daemon_threads = True


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixture", required=True, help="the capture folder (holding redfish/v1)")
    p.add_argument("--listen", default="::1")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", default="root")
    p.add_argument("--password-file", required=True)
    p.add_argument("--job-style", choices=["one-shot", "two-step"], default="one-shot")
    p.add_argument("--job-seconds", type=float, default=0.8,
                   help="how long a job stays Running after the reset (a real BIOS job: minutes of POST)")
    p.add_argument("--quirk", action="append", default=[])
    a = p.parse_args()
    with open(a.password_file, encoding="utf-8") as f:
        a.password = f.read().strip()
    Handler.st = State(a.fixture, a)
    httpd = Server((a.listen, a.port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print(f"idrac-sim listening on [{a.listen}]:{a.port}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
