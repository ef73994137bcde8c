//! Services: addresses, endpoints, the node proxy and the embedded DNS server, driven with
//! kubectl, dig, curl and a dnsmasq upstream.

use crate::controllers::hello_deployment;
use crate::harness::{curl_with, wait_for, Cluster};
use std::collections::BTreeSet;
use std::process::Command;

/// `dig` against the cluster's DNS server; returns its full output.
fn dig(c: &Cluster, args: &[&str]) -> String {
    let (host, port) = c.dns.rsplit_once(':').expect("dns address");
    let out = Command::new("dig").arg(format!("@{host}")).args(["-p", port, "+time=2", "+tries=1"]).args(args).output().expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dig_short(c: &Cluster, args: &[&str]) -> BTreeSet<String> {
    let mut a = vec!["+short"];
    a.extend_from_slice(args);
    // `;;` lines are dig's notes (a retried timeout, say), not answers.
    dig(c, &a).lines().filter(|l| !l.is_empty() && !l.starts_with(";;")).map(str::to_owned).collect()
}

fn http_get(url: &str) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "5", url]);
    curl_with(c)
}

/// A dnsmasq on 127.0.0.1:`port` answering `--address=/<domain>/<ip>` for one name, and
/// nothing else (no upstream, no hosts file); killed when dropped.
struct Dnsmasq(std::process::Child);

impl Dnsmasq {
    fn start(port: u16, domain: &str, ip: &str) -> Self {
        let child = Command::new("dnsmasq")
            .args(["--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1", "--user=root"])
            .arg(format!("--port={port}"))
            .arg(format!("--address=/{domain}/{ip}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        Self(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

#[test]
fn services_get_addresses_endpoints_dns_names_and_balance_across_pods() {
    let (c, _dir) = Cluster::start();
    let image = c.push_example_as("hello-wagi", "v1");
    let lb_port = free_port();
    let manifest = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: hello}}\nspec:\n  selector: {{app: hello}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: hello-headless}}\nspec:\n  clusterIP: None\n  selector: {{app: hello}}\n  ports: [{{name: http, port: 8080, targetPort: http}}]\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: hello-np}}\nspec:\n  type: NodePort\n  selector: {{app: hello}}\n  ports: [{{port: 80, targetPort: http}}]\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: hello-lb}}\nspec:\n  type: LoadBalancer\n  selector: {{app: hello}}\n  ports: [{{port: {lb_port}, targetPort: 8080}}]\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: docs}}\nspec:\n  type: ExternalName\n  externalName: docs.example.com\n",
        hello_deployment("hello", &image, 3, "")
    );
    c.apply(&manifest);
    c.ok(&["rollout", "status", "deployment/hello", "--timeout=120s"]);

    // Addresses: a ClusterIP from the cluster's service range, the kubernetes Service first in it.
    let cluster_ip = c.jsonpath(&["svc", "hello"], "{.spec.clusterIP}");
    let kubernetes_ip = c.jsonpath(&["svc", "kubernetes"], "{.spec.clusterIP}");
    assert!(kubernetes_ip.ends_with(".1") && cluster_ip.rsplit_once('.').map(|(n, _)| n) == kubernetes_ip.rsplit_once('.').map(|(n, _)| n), "{cluster_ip} {kubernetes_ip}");
    let node_port = c.jsonpath(&["svc", "hello-np"], "{.spec.ports[0].nodePort}");
    assert!(node_port.parse::<u16>().is_ok_and(|p| (30000..=32767).contains(&p)), "{node_port}");

    // Endpoints: the three pods, in the EndpointSlice and the Endpoints object.
    let pod_ips: BTreeSet<String> = c.jsonpath(&["pods", "-l", "app=hello"], "{.items[*].status.podIP}").split_whitespace().map(str::to_owned).collect();
    assert_eq!(pod_ips.len(), 3);
    let slice_ips = wait_for(30, "three endpoints in the slice", || {
        let ips: BTreeSet<String> = c.jsonpath(&["endpointslices", "-l", "kubernetes.io/service-name=hello"], "{.items[*].endpoints[*].addresses[0]}").split_whitespace().map(str::to_owned).collect();
        (ips.len() == 3).then_some(ips)
    });
    assert_eq!(slice_ips, pod_ips);
    let ep = c.ok(&["get", "endpoints", "hello"]);
    assert!(pod_ips.iter().all(|ip| ep.contains(&format!("{ip}:8080"))), "{ep}");
    let headless_ports = c.jsonpath(&["endpointslices", "-l", "kubernetes.io/service-name=hello-headless"], "{.items[0].ports[0].port}");
    assert_eq!(headless_ports, "8080", "the named targetPort resolves to the container port");

    // DNS (the first answer waits for the server's watch to have seen the Service).
    wait_for(30, "the Service name to resolve", || (dig_short(&c, &["hello.default.svc.cluster.local"]) == BTreeSet::from([cluster_ip.clone()])).then_some(()));
    assert_eq!(dig_short(&c, &["SRV", "_http._tcp.hello.default.svc.cluster.local"]), BTreeSet::from(["0 100 80 hello.default.svc.cluster.local.".to_owned()]));
    assert_eq!(dig_short(&c, &["hello-headless.default.svc.cluster.local"]), pod_ips);
    assert_eq!(dig_short(&c, &["docs.default.svc.cluster.local"]).into_iter().next().as_deref(), Some("docs.example.com."));
    let first_ip = pod_ips.iter().next().cloned().unwrap_or_default();
    assert_eq!(dig_short(&c, &[&format!("{}.default.pod.cluster.local", first_ip.replace('.', "-"))]), BTreeSet::from([first_ip.clone()]));
    let reverse = dig_short(&c, &["-x", &cluster_ip]);
    assert_eq!(reverse, BTreeSet::from(["hello.default.svc.cluster.local.".to_owned()]));
    let unknown = dig(&c, &["nosuch.default.svc.cluster.local"]);
    assert!(unknown.contains("status: NXDOMAIN") && unknown.contains("IN\tSOA"), "{unknown}");
    let nodata = dig(&c, &["AAAA", "hello.default.svc.cluster.local"]);
    assert!(nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0") && nodata.contains("IN\tSOA"), "{nodata}");
    let tcp = dig_short(&c, &["+tcp", "hello.default.svc.cluster.local"]);
    assert_eq!(tcp, BTreeSet::from([cluster_ip.clone()]));

    // The proxy: the ClusterIP balances over all three pods; NodePort and load balancer answer.
    let mut answered = BTreeSet::new();
    for _ in 0..12 {
        let (code, body) = http_get(&format!("http://{cluster_ip}:80/"));
        assert_eq!(code, 200, "{body}");
        answered.insert(body.trim().to_owned());
    }
    assert_eq!(answered.len(), 3, "{answered:?}");
    assert!(answered.iter().all(|a| a.starts_with("hello from hello-")), "{answered:?}");
    let (code, body) = http_get(&format!("http://127.0.0.1:{node_port}/"));
    assert!(code == 200 && body.starts_with("hello from hello-"), "{code} {body}");
    let ingress = wait_for(30, "a load-balancer address", || Some(c.jsonpath(&["svc", "hello-lb"], "{.status.loadBalancer.ingress[0].ip}")).filter(|s| !s.is_empty()));
    assert_eq!(ingress, "127.0.0.1");
    let (code, body) = http_get(&format!("http://{ingress}:{lb_port}/"));
    assert!(code == 200 && body.starts_with("hello from hello-"), "{code} {body}");
    assert!(c.ok(&["get", "svc", "hello-lb"]).contains("127.0.0.1"), "EXTERNAL-IP column");

    // Scaling changes the headless answer within moments.
    c.ok(&["scale", "deployment/hello", "--replicas=2"]);
    wait_for(30, "two addresses for the headless service", || (dig_short(&c, &["hello-headless.default.svc.cluster.local"]).len() == 2).then_some(()));

    // A pod started now sees the Services in its environment.
    let envdump = c.push_example_as("envdump", "v1");
    c.apply(&format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: env}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: env\n    image: {envdump}\n"));
    c.wait_jsonpath(&["pod", "env"], "{.status.phase}", "Succeeded", 60);
    let logs = c.ok(&["logs", "env"]);
    for line in [
        format!("HELLO_SERVICE_HOST={cluster_ip}"),
        "HELLO_SERVICE_PORT=80".to_owned(),
        "HELLO_SERVICE_PORT_HTTP=80".to_owned(),
        format!("HELLO_PORT=tcp://{cluster_ip}:80"),
        format!("HELLO_PORT_80_TCP_ADDR={cluster_ip}"),
        format!("KUBERNETES_SERVICE_HOST={kubernetes_ip}"),
        "HELLO_NP_SERVICE_PORT=80".to_owned(),
    ] {
        assert!(logs.lines().any(|l| l == line), "missing {line} in:\n{logs}");
    }
    assert!(!logs.contains("HELLO_HEADLESS_SERVICE_HOST"), "headless Services get no variables:\n{logs}");
    c.stop();
}

#[test]
fn bad_services_are_refused_with_the_field_at_fault() {
    let (c, _dir) = Cluster::start();
    let svc = |name: &str, spec: &str| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n{spec}");
    let refused = |manifest: String| {
        let out = c.kubectl_stdin(&["create", "-f", "-"], &manifest);
        assert!(!out.status.success(), "accepted:\n{manifest}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(svc("big", "  ports: [{port: 70000}]\n"));
    assert!(err.contains("spec.ports[0].port: Invalid value: 70000"), "{err}");
    let err = refused(svc("outside", "  clusterIP: 10.0.0.1\n  ports: [{port: 80}]\n"));
    assert!(err.contains("spec.clusterIPs: Invalid value") && err.contains("not in the valid range"), "{err}");
    let taken = c.jsonpath(&["svc", "kubernetes"], "{.spec.clusterIP}");
    let err = refused(svc("dup", &format!("  clusterIP: {taken}\n  ports: [{{port: 80}}]\n")));
    assert!(err.contains("provided IP is already allocated"), "{err}");
    c.apply(&svc("first", "  type: NodePort\n  ports: [{port: 80, nodePort: 30555}]\n"));
    let err = refused(svc("second", "  type: NodePort\n  ports: [{port: 80, nodePort: 30555}]\n"));
    assert!(err.contains("spec.ports[0].nodePort: Invalid value: 30555: provided port is already allocated"), "{err}");
    // The ClusterIP cannot change once given.
    let err = c.fails(&["patch", "svc", "first", "-p", r#"{"spec":{"clusterIP":"127.0.0.99","clusterIPs":["127.0.0.99"]}}"#]);
    assert!(err.contains("field is immutable"), "{err}");
    c.stop();
}

#[test]
fn dns_forwards_outside_names_and_survives_bad_packets_and_floods() {
    // A local upstream, as there is no internet: dnsmasq answering one name.
    let port = free_port();
    let _dnsmasq = Dnsmasq::start(port, "example.com", "93.184.216.34");
    let upstream = format!("127.0.0.1:{port}");
    let (c, _dir) = Cluster::start_with(&["--dns-upstream", &upstream]);
    let forwarded = wait_for(20, "the forwarded answer", || Some(dig_short(&c, &["example.com"])).filter(|a| !a.is_empty()));
    assert_eq!(forwarded, BTreeSet::from(["93.184.216.34".to_owned()]));
    let kubernetes_ip = c.jsonpath(&["svc", "kubernetes"], "{.spec.clusterIP}");

    // Garbage over UDP and TCP, an oversized TCP message, then a flood: answers keep coming.
    use std::io::Write;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    for junk in [&b"\x00"[..], b"\x12\x34 not a dns message at all", &[0xff; 600]] {
        udp.send_to(junk, &c.dns).expect("send junk");
    }
    let mut tcp = std::net::TcpStream::connect(&c.dns).expect("tcp");
    let _ = tcp.write_all(&[0xff, 0xff]);
    let _ = tcp.write_all(&vec![0xab; 65535]);
    drop(tcp);
    let dns = c.dns.clone();
    let flood = std::thread::spawn(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        // A valid question for kubernetes.default.svc.cluster.local, sent 20,000 times.
        let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["kubernetes", "default", "svc", "cluster", "local"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        for _ in 0..20_000 {
            let _ = sock.send_to(&q, &dns);
        }
    });
    // During the flood a question may be dropped with the flood's; dig's retries get through.
    assert_eq!(dig_short(&c, &["+tries=10", "kubernetes.default.svc.cluster.local"]), BTreeSet::from([kubernetes_ip.clone()]));
    flood.join().expect("flood");
    assert_eq!(dig_short(&c, &["kubernetes.default.svc.cluster.local"]), BTreeSet::from([kubernetes_ip]));
    assert_eq!(dig_short(&c, &["example.com"]), BTreeSet::from(["93.184.216.34".to_owned()]));
    c.stop();
}

/// One HTTP/1.0 GET over a fresh connection; the body, or why it failed.
fn raw_get(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: hello\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| format!("read: {e}"))?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(format!("bad answer: {out:?}")),
    }
}

#[test]
fn a_rolling_update_behind_a_service_drops_no_request() {
    let (c, _dir) = Cluster::start();
    let v1 = c.push_example_as("hello-wagi", "v1");
    let v2 = c.push_example_as("hello-wagi", "v2");
    let svc = "---\napiVersion: v1\nkind: Service\nmetadata: {name: hello}\nspec:\n  selector: {app: hello}\n  ports: [{name: http, port: 80, targetPort: http}]\n";
    c.apply(&format!("{}{svc}", hello_deployment("hello", &v1, 3, "  strategy: {rollingUpdate: {maxUnavailable: 1, maxSurge: 1}}\n")));
    c.ok(&["rollout", "status", "deployment/hello", "--timeout=120s"]);
    let addr = format!("{}:80", c.jsonpath(&["svc", "hello"], "{.spec.clusterIP}"));
    wait_for(30, "the service to answer", || raw_get(&addr).ok());

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (addr, done) = (addr.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failures, mut pods) = (0u32, Vec::new(), BTreeSet::new());
            while ok + (failures.len() as u32) < 10_000 || !done.load(std::sync::atomic::Ordering::SeqCst) {
                match raw_get(&addr) {
                    Ok(body) => {
                        ok += 1;
                        pods.insert(body.trim().to_owned());
                    }
                    Err(e) => failures.push(e),
                }
            }
            (ok, failures, pods)
        })
    };
    c.ok(&["set", "image", "deployment/hello", &format!("web={v2}")]);
    c.ok(&["rollout", "status", "deployment/hello", "--timeout=180s"]);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failures, pods) = client.join().expect("client thread");
    assert!(failures.is_empty(), "{} of {} requests failed, first: {:?}", failures.len(), ok as usize + failures.len(), failures.first());
    assert!(ok >= 10_000, "{ok}");
    // Old and new pods both answered: the loop really ran across the rollout.
    assert!(pods.len() >= 6, "{pods:?}");
    c.stop();
}

#[test]
fn a_udp_service_without_selector_reaches_endpoints_written_by_hand() {
    // The backend is a dnsmasq on the host, named by an EndpointSlice a user writes for a
    // Service without a selector (the way Kubernetes points a Service at something outside).
    let port = free_port();
    let _dnsmasq = Dnsmasq::start(port, "backend.example", "10.1.2.3");
    let (c, _dir) = Cluster::start();
    c.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: udp-dns}}\nspec:\n  ports: [{{name: dns, port: 5353, protocol: UDP}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: udp-dns-1\n  labels: {{kubernetes.io/service-name: udp-dns}}\n\
         addressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: dns, port: {port}, protocol: UDP}}]\n"
    ));
    let ip = c.jsonpath(&["svc", "udp-dns"], "{.spec.clusterIP}");
    // The endpoints controller leaves a selector-less Service's endpoints to the user.
    assert_eq!(c.jsonpath(&["endpointslices", "-l", "kubernetes.io/service-name=udp-dns"], "{.items[*].metadata.name}"), "udp-dns-1");
    let answer = wait_for(30, "an answer through the UDP service", || {
        let out = Command::new("dig").arg(format!("@{ip}")).args(["-p", "5353", "+short", "+time=1", "+tries=1", "backend.example"]).output().expect("dig");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!text.is_empty() && !text.starts_with(";;")).then_some(text)
    });
    assert_eq!(answer, "10.1.2.3");
    c.stop();
}

#[test]
fn a_wasm_frontend_calls_its_backend_by_dns_name() {
    let (c, _dir) = Cluster::start();
    let backend = c.push_example("hello-wagi");
    let frontend = c.push_example("frontend");
    // The example as shipped, with this cluster's registry in the image names.
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/wasm-examples/two-tier.yaml")).expect("two-tier.yaml");
    c.apply(&example.replace("127.0.0.1:5000/examples/hello-wagi:v1", &backend).replace("127.0.0.1:5000/examples/frontend:v1", &frontend));
    c.ok(&["rollout", "status", "deployment/backend", "--timeout=120s"]);
    c.ok(&["rollout", "status", "deployment/frontend", "--timeout=120s"]);
    let frontend_ip = c.jsonpath(&["svc", "frontend"], "{.spec.clusterIP}");

    // `http://backend/` from the frontend's namespace reaches both backend replicas through
    // the backend Service; the request path is passed on.
    // (Until the proxy listens and the backends are endpoints, answers may be errors.)
    let mut answered = BTreeSet::new();
    wait_for(60, "both backends to answer through the frontend", || {
        let (code, body) = http_get(&format!("http://{frontend_ip}/"));
        if code == 200 {
            let backend_says = body.strip_prefix("frontend got 200 from http://backend/: ").unwrap_or_else(|| panic!("unexpected answer {body:?}"));
            assert!(backend_says.starts_with("hello from backend-"), "{body}");
            answered.insert(backend_says.trim().to_owned());
        }
        (answered.len() == 2).then_some(())
    });
    let (code, body) = http_get(&format!("http://{frontend_ip}/status/418"));
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("frontend got 418 from http://backend/status/418: hello from backend-"), "{body}");
    let frontend_pod = c.jsonpath(&["pods", "-l", "app=frontend"], "{.items[0].metadata.name}");
    let logs = c.ok(&["logs", &frontend_pod]);
    assert!(logs.lines().any(|l| l == "frontend: GET / -> http://backend/: 200"), "{logs}");
    // The backends run on the frontend's node, so the call is answered in process: the
    // backend sees the frontend pod as its client, not a loopback connection.
    let frontend_pod_ip = c.jsonpath(&["pods", "-l", "app=frontend"], "{.items[0].status.podIP}");
    let (code, body) = http_get(&format!("http://{frontend_ip}/env"));
    assert_eq!(code, 200, "{body}");
    assert!(body.lines().any(|l| l == format!("REMOTE_ADDR={frontend_pod_ip}")), "{body}");

    // From another namespace: the short name is not found (NXDOMAIN from the cluster
    // zone, then the host's resolvers), the namespace-qualified one is.
    c.ok(&["create", "namespace", "other"]);
    let caller = |name: &str, url: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: other}}\nspec:\n  containers:\n  - name: frontend\n    image: {frontend}\n    env: [{{name: BACKEND_URL, value: \"{url}\"}}]\n    ports: [{{containerPort: 8080}}]\n"
        )
    };
    // A Service with client affinity is reached through the proxy (which keeps it), over TCP.
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: backend-sticky}\nspec:\n  selector: {app: backend}\n  sessionAffinity: ClientIP\n  ports: [{port: 80, targetPort: http}]\n");
    c.apply(&format!("{}---\n{}---\n{}", caller("qualified", "http://backend.default/"), caller("short", "http://backend/"), caller("sticky", "http://backend-sticky.default/")));
    for pod in ["qualified", "short", "sticky"] {
        c.wait_jsonpath(&["pod", pod, "-n", "other"], "{.status.phase}", "Running", 60);
    }
    let pod_ip = |pod: &str| c.jsonpath(&["pod", pod, "-n", "other"], "{.status.podIP}");
    let (code, body) = wait_for(30, "the qualified frontend to serve", || Some(http_get(&format!("http://{}:8080/", pod_ip("qualified")))).filter(|(code, _)| *code != 0));
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("frontend got 200 from http://backend.default/: hello from backend-"), "{body}");
    let (code, body) = wait_for(30, "the frontend of the sticky Service to serve", || Some(http_get(&format!("http://{}:8080/env", pod_ip("sticky")))).filter(|(code, _)| *code == 200));
    assert!(body.starts_with("frontend got 200 from http://backend-sticky.default/env: hello from backend-"), "{code} {body}");
    assert!(body.lines().any(|l| l == "REMOTE_ADDR=127.0.0.1"), "the proxy's connection: {body}");
    // The host's resolvers are asked last: give them time to say no.
    let slow_get = |url: String| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "30", &url]);
        curl_with(c)
    };
    let (code, body) = wait_for(60, "the short-name frontend to serve", || Some(slow_get(format!("http://{}:8080/", pod_ip("short")))).filter(|(code, _)| *code != 0));
    assert_eq!(code, 502, "{body}");
    assert!(body.starts_with("frontend: http://backend/ failed: DNS-error"), "{body}");
    c.stop();
}
