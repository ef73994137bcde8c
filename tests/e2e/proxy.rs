//! The proxy subresources of pods, Services and nodes, driven through a real
//! `kubectl proxy` with curl, and with `kubectl get --raw`.

use crate::controllers::hello_deployment;
use crate::harness::{curl_with, lines_of, wait_for, Cluster};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `kubectl proxy --port=0`, killed when dropped.
struct KubectlProxy {
    child: Child,
    /// `http://127.0.0.1:PORT`
    base: String,
}

impl KubectlProxy {
    fn start(c: &Cluster) -> Self {
        let mut child = c.kubectl_cmd(&["proxy", "--port=0"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start kubectl proxy");
        let lines = lines_of(child.stdout.take().expect("stdout"));
        let mut proxy = Self { child, base: String::new() };
        let line = lines.recv_timeout(Duration::from_secs(30)).expect("kubectl proxy says where it serves");
        let address = line.strip_prefix("Starting to serve on ").unwrap_or_else(|| panic!("unexpected first line: {line}"));
        proxy.base = format!("http://{}", address.trim());
        proxy
    }

    /// curl against the proxy with `args` before the URL; returns (status, body).
    fn curl(&self, args: &[&str], path: &str) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "30"]).args(args).arg(format!("{}{path}", self.base));
        curl_with(c)
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.curl(&[], path)
    }
}

impl Drop for KubectlProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(code, reason, message)` of a Status body.
#[track_caller]
fn status_of(body: &str) -> (u64, String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not a Status ({e}): {body}"));
    assert_eq!(v["kind"], "Status", "{body}");
    (v["code"].as_u64().unwrap_or(0), v["reason"].as_str().unwrap_or("").to_owned(), v["message"].as_str().unwrap_or("").to_owned())
}

#[test]
fn pods_services_and_nodes_answer_through_their_proxy_subresources() {
    let (c, _dir) = Cluster::start();
    let image = c.push_example("hello-wagi");
    let manifest = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: idle}}\nspec:\n  selector: {{app: nothing}}\n  ports: [{{port: 80}}]\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: manual}}\nspec:\n  ports: [{{port: 80}}]\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pending}}\nspec:\n  nodeSelector: {{nowhere: \"true\"}}\n  containers:\n  - name: c\n    image: \"{image}\"\n    ports: [{{containerPort: 8080}}]\n",
        hello_deployment("web", &image, 1, "")
    );
    c.apply(&manifest);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let pod = c.jsonpath(&["pods", "-l", "app=web"], "{.items[0].metadata.name}");
    let pod_ip = c.jsonpath(&["pod", &pod], "{.status.podIP}");
    let hello = format!("hello from {pod}\n");
    let proxy = KubectlProxy::start(&c);
    let pods = "/api/v1/namespaces/default/pods";

    // A pod by port number, by the name of its container port, and at its first port.
    for id in [format!("{pod}:8080"), format!("{pod}:http"), pod.clone(), format!("http:{pod}:8080")] {
        assert_eq!(proxy.get(&format!("{pods}/{id}/proxy/")), (200, hello.clone()), "{id}");
    }
    // Every method, the body, the query and the caller's headers reach it; its own
    // status comes back; the caller's credential stays with the API server.
    let (code, body) = proxy.curl(&["--data-binary", "the body"], &format!("{pods}/{pod}:8080/proxy/echo"));
    assert_eq!((code, body), (200, format!("{hello}the body")));
    let (code, env) = proxy.curl(&["-H", "X-Test: yes"], &format!("{pods}/{pod}:8080/proxy/env?a=1&b=two"));
    assert_eq!(code, 200, "{env}");
    let lines: Vec<&str> = env.lines().collect();
    let forwarded = format!("HTTP_X_FORWARDED_URI={pods}/{pod}:8080/proxy/env");
    for want in ["QUERY_STRING=a=1&b=two", "HTTP_X_TEST=yes", "REQUEST_METHOD=GET", forwarded.as_str()] {
        assert!(lines.contains(&want), "{want} in {env}");
    }
    assert!(!lines.iter().any(|l| l.starts_with("HTTP_AUTHORIZATION=")), "{env}");
    for method in ["PUT", "PATCH", "DELETE", "OPTIONS"] {
        let (code, env) = proxy.curl(&["-X", method], &format!("{pods}/{pod}:8080/proxy/env"));
        assert!(code == 200 && env.lines().any(|l| l == format!("REQUEST_METHOD={method}")), "{method}: {code} {env}");
    }
    assert_eq!(proxy.curl(&["-I"], &format!("{pods}/{pod}:8080/proxy/")).0, 200, "HEAD");
    assert_eq!(proxy.get(&format!("{pods}/{pod}:8080/proxy/status/418")).0, 418);
    // The bare subresource sends a browser to its root.
    let out = Command::new("curl").args(["-sS", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"]).arg(format!("{}{pods}/{pod}:8080/proxy?x=1", proxy.base)).output().expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("301 {}{pods}/{pod}:8080/proxy/?x=1", proxy.base));

    // A Service by port number, port name and with a scheme, through its ready endpoint.
    for id in ["web:80", "web:http", "http:web:80"] {
        assert_eq!(proxy.get(&format!("/api/v1/namespaces/default/services/{id}/proxy/")), (200, hello.clone()), "{id}");
    }
    let (code, body) = proxy.curl(&["--data-binary", "to the service"], "/api/v1/namespaces/default/services/web:80/proxy/echo");
    assert_eq!((code, body), (200, format!("{hello}to the service")));

    // kubectl's own client reaches the pod, and the node's endpoint with the API server's credential.
    assert_eq!(c.ok(&["get", "--raw", &format!("{pods}/{pod}:8080/proxy/")]), hello);
    let node = c.jsonpath(&["pod", &pod], "{.spec.nodeName}");
    let log = c.ok(&["get", "--raw", &format!("/api/v1/nodes/{node}/proxy/containerLogs/default/{pod}/web")]);
    assert!(log.lines().any(|l| l == "hello-wagi: GET /"), "{log}");

    // Upstream's errors.
    let missing = c.fails(&["get", "--raw", &format!("{pods}/nosuch:8080/proxy/")]);
    assert!(missing.contains("Error from server (NotFound): pods \"nosuch\" not found"), "{missing}");
    let (code, body) = proxy.get(&format!("{pods}/nosuch:8080/proxy/"));
    assert_eq!((code, status_of(&body)), (404, (404, "NotFound".into(), "pods \"nosuch\" not found".into())));
    let (code, body) = proxy.get(&format!("{pods}/pending:8080/proxy/"));
    assert_eq!((code, status_of(&body)), (400, (400, "BadRequest".into(), "address not allowed".into())));
    // A port of the pod's address nothing listens on: bound for a moment, then let go.
    let closed = std::net::TcpListener::bind((pod_ip.as_str(), 0)).and_then(|l| l.local_addr()).expect("a free port on the pod's address").port();
    let (code, body) = proxy.get(&format!("{pods}/{pod}:{closed}/proxy/"));
    let refused = format!("error trying to reach service: dial tcp {pod_ip}:{closed}: connect: connection refused");
    assert_eq!((code, status_of(&body)), (503, (503, "ServiceUnavailable".into(), refused)));
    let (code, body) = proxy.get("/api/v1/namespaces/default/services/web:81/proxy/");
    assert_eq!((code, status_of(&body)), (503, (503, "ServiceUnavailable".into(), "no service port 81 found for service \"web\"".into())));
    let (code, body) = proxy.get("/api/v1/namespaces/default/services/manual:80/proxy/");
    assert_eq!((code, status_of(&body)), (404, (404, "NotFound".into(), "endpoints \"manual\" not found".into())));
    // The endpoints controller writes the empty Endpoints of `idle` in its own time.
    let idle = wait_for(30, "the Service with no pods to have its empty Endpoints", || {
        let (code, body) = proxy.get("/api/v1/namespaces/default/services/idle:80/proxy/");
        (code == 503).then_some(body)
    });
    assert_eq!(status_of(&idle), (503, "ServiceUnavailable".into(), "no endpoints available for service \"idle\"".into()));
    let unavailable = c.fails(&["get", "--raw", "/api/v1/namespaces/default/services/idle:80/proxy/"]);
    assert!(unavailable.contains("Error from server (ServiceUnavailable): no endpoints available for service \"idle\""), "{unavailable}");
}
