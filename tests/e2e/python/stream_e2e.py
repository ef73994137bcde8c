"""The official Python client's streaming calls against wasm pods: exec through
kubernetes.stream.stream (output, exit codes, interactive stdin), many exec sessions at
once, and port-forward through kubernetes.stream.portforward. Modelled on the client's own
e2e tests (kubernetes/e2e_test/test_client.py: test_pod_apis, test_exit_code,
test_portforward_raw), which use busybox shells; here the commands are the job module and
the node's built-in tools.

Environment: KUBECONFIG, EXEC_POD (a pod running `job sleep 3600`), WEB_POD (a WAGI server
on 8080). Prints one line per check and "N passed, M failed" last.
"""
import concurrent.futures
import os
import sys
import traceback

from kubernetes import client, config
from kubernetes.stream import portforward, stream

config.load_kube_config()
api = client.CoreV1Api()
NS = "default"
EXEC_POD = os.environ["EXEC_POD"]
WEB_POD = os.environ["WEB_POD"]
results = []


def check(fn):
    try:
        fn()
        results.append(True)
        print(f"ok {fn.__name__}")
    except Exception:
        results.append(False)
        print(f"FAILED {fn.__name__}\n{traceback.format_exc()}")
    sys.stdout.flush()
    return fn


def exec_(command, **kw):
    return stream(api.connect_get_namespaced_pod_exec, EXEC_POD, NS, command=command,
                  stderr=True, stdin=False, stdout=True, tty=False, **kw)


@check
def exec_returns_the_module_output():
    out = exec_(["job", "0", "from-python"])
    assert out == "job: start\narg[0]=job\narg[1]=0\narg[2]=from-python\nmessage: exec-env\n", repr(out)


@check
def exec_reports_exit_codes_on_the_error_channel():
    for code in (0, 3, 42):
        resp = exec_(["job", str(code)], _preload_content=False)
        resp.run_forever(timeout=30)
        assert resp.returncode == code, (code, resp.returncode)
    resp = exec_(["no-such-program"], _preload_content=False)
    resp.run_forever(timeout=30)
    assert resp.returncode == 127, resp.returncode
    assert "executable file not found" in resp.read_stderr()


@check
def exec_streams_interactive_stdin():
    resp = stream(api.connect_get_namespaced_pod_exec, EXEC_POD, NS, command=["cat"],
                  stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    got = ""
    for line in ("first line\n", "second line\n"):
        resp.write_stdin(line)
        while line not in got:
            resp.update(timeout=10)
            assert resp.is_open(), "the session ended early"
            got += resp.read_stdout()
    resp.close()
    assert got == "first line\nsecond line\n", repr(got)


@check
def two_hundred_exec_sessions_at_once():
    def one(i):
        return exec_(["echo", f"session {i}"])
    def guarded(i):
        try:
            return one(i)
        except Exception as e:
            return f"session {i} raised {type(e).__name__}: {e}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        outs = list(pool.map(guarded, range(200)))
    wrong = [(i, o) for i, o in enumerate(outs) if o != f"session {i}\n"]
    assert not wrong, f"{len(wrong)} of 200 sessions went wrong, e.g. {wrong[:3]}"


@check
def portforward_carries_http():
    pf = portforward(api.connect_get_namespaced_pod_portforward, WEB_POD, NS, ports="8080")
    sock = pf.socket(8080)
    sock.setblocking(True)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
    reply = b""
    while True:
        data = sock.recv(4096)
        if not data:
            break
        reply += data
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert reply.endswith(b"hello from " + WEB_POD.encode() + b"\n"), reply[-200:]
    assert pf.error(8080) is None, pf.error(8080)


@check
def exec_into_a_missing_pod_is_not_found():
    try:
        stream(api.connect_get_namespaced_pod_exec, "ghost", NS, command=["env"], stderr=True, stdin=False, stdout=True, tty=False)
    except Exception as e:  # the client raises ApiException (or a websocket handshake error)
        assert "404" in str(e) or "Not Found" in str(e), str(e)
    else:
        raise AssertionError("exec into a missing pod succeeded")


@check
def garbage_on_the_wire_is_contained():
    import ssl
    import websocket
    cfg = client.Configuration.get_default_copy()
    url = cfg.host.replace("https://", "wss://") + f"/api/v1/namespaces/{NS}/pods/{EXEC_POD}/exec?command=cat&stdin=true&stdout=true"
    headers = [f"Authorization: {cfg.api_key['authorization']}"]
    for garbage in (os.urandom(65536), b"\xff" * 14 + os.urandom(1024)):
        ws = websocket.create_connection(url, header=headers, subprotocols=["v5.channel.k8s.io"], sslopt={"cert_reqs": ssl.CERT_NONE})
        # Frames on channels nobody reads, then bytes that are no WebSocket frame at all.
        ws.send_binary(b"\x07unknown channel")
        ws.send_binary(b"")
        try:
            ws.sock.sendall(garbage)
        except OSError:
            pass  # the server may close on the first bad frame, before all of it is sent
        try:
            while ws.recv():
                pass
        except Exception:
            pass  # the server closed the connection, as it should
        ws.close()
    # The node still answers.
    assert exec_(["echo", "still here"]) == "still here\n"


passed = results.count(True)
print(f"{passed} passed, {len(results) - passed} failed")
sys.exit(0 if passed == len(results) else 1)
