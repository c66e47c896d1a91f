package main

import (
	"fmt"
	"github.com/tee-ingress/tee-ingress/dnscaa"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is what METRICS_LISTEN serves: Prometheus /metrics, /healthz and
// /readyz. Latencies are observed as they happen; everything else is read
// from the daemon's state at scrape time.
type metrics struct {
	d        *daemon
	reg      *prometheus.Registry
	acmeDur  *prometheus.HistogramVec
	dnsDur   *prometheus.HistogramVec
	evidence *prometheus.CounterVec
}

var latencyBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

func newMetrics(d *daemon) *metrics {
	m := &metrics{d: d, reg: prometheus.NewRegistry()}
	m.acmeDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tee_ingress_acme_request_duration_seconds",
		Help:    "Duration of HTTP requests to the ACME CA, by method and status code (\"error\": no response).",
		Buckets: latencyBuckets,
	}, []string{"method", "code"})
	m.dnsDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tee_ingress_dns_provider_call_duration_seconds",
		Help:    "Duration of DNS provider API calls, by provider, operation and result (ok or error).",
		Buckets: latencyBuckets,
	}, []string{"provider", "op", "result"})
	m.evidence = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tee_ingress_evidence_publications_total",
		Help: "Evidence bundle builds, by result (ok, or error: the previous bundle stayed).",
	}, []string{"result"})
	m.evidence.WithLabelValues("ok")
	m.evidence.WithLabelValues("error")
	m.reg.MustRegister(m.acmeDur, m.dnsDur, m.evidence, stateCollector{d},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) evidencePublished(err error) {
	if err != nil {
		m.evidence.WithLabelValues("error").Inc()
	} else {
		m.evidence.WithLabelValues("ok").Inc()
	}
}

func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: nil}))
	mux.HandleFunc("GET /dns-records", m.d.serveDNSRecords)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ready, lines := m.d.readiness()
		if ready {
			if err := m.d.probeAgent(r.Context()); err != nil {
				ready = false
				lines = append(lines, "agent: "+err.Error())
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready")
		} else {
			fmt.Fprintln(w, "ready")
		}
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	})
	return mux
}

// acmeTransport times every ACME request.
func (m *metrics) acmeTransport(base http.RoundTripper) http.RoundTripper {
	return &timedTransport{base: base, h: m.acmeDur}
}

type timedTransport struct {
	base http.RoundTripper
	h    *prometheus.HistogramVec
}

func (t *timedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	t.h.WithLabelValues(req.Method, code).Observe(time.Since(start).Seconds())
	return resp, err
}

// observeDNS records one DNS provider call (dnscaa's Observer).
func (m *metrics) observeDNS(c dnscaa.Call) {
	result := "ok"
	if c.Err != nil {
		result = "error"
	}
	m.dnsDur.WithLabelValues(c.Provider, strings.ReplaceAll(c.Op, " ", "_"), result).Observe(c.Took.Seconds())
}

// stateCollector reads the daemon's state at scrape time.
type stateCollector struct{ d *daemon }

var (
	descInfo = prometheus.NewDesc("tee_ingress_info",
		"Constant 1, labelled with how this ingress runs; simulator=\"true\" means NOT A TEE.",
		[]string{"cert_source", "challenge", "mode", "simulator"}, nil)
	descReady = prometheus.NewDesc("tee_ingress_ready",
		"1 when every configured domain has a certificate being served and evidence is published (see /readyz).", nil, nil)
	descStepOK = prometheus.NewDesc("tee_ingress_step_ok",
		"1 when the start-up step (agent, account, dns, evidence) last succeeded or has not failed, 0 while it is failing.", []string{"step"}, nil)
	descExpiry = prometheus.NewDesc("tee_ingress_certificate_expiry_timestamp_seconds",
		"NotAfter of the certificate served for the domain, as a Unix time.", []string{"domain"}, nil)
	descRenewals = prometheus.NewDesc("tee_ingress_certificate_renewals_total",
		"Certificates obtained from the CA for the domain by this process (the first issuance included).", []string{"domain"}, nil)
	descOrders = prometheus.NewDesc("tee_ingress_certificate_orders_total",
		"Orders this process placed at the CA for the domain (with replicas, only the elected issuer orders).", []string{"domain"}, nil)
	descLeader = prometheus.NewDesc("tee_ingress_cluster_leader",
		"1 while this replica is the elected issuer of the domain's certificate (CLUSTER_STORE).", []string{"domain"}, nil)
	descFailures = prometheus.NewDesc("tee_ingress_certificate_failures_total",
		"Failed attempts to obtain or renew the domain's certificate since start.", []string{"domain"}, nil)
	descConsecutive = prometheus.NewDesc("tee_ingress_certificate_consecutive_failures",
		"Failed attempts since the last success (0: fine); the current certificate keeps being served.", []string{"domain"}, nil)
	descRateLimited = prometheus.NewDesc("tee_ingress_certificate_rate_limited",
		"1 when the CA's last answer for the domain was a rate limit.", []string{"domain"}, nil)
	descNextCheck = prometheus.NewDesc("tee_ingress_certificate_next_check_timestamp_seconds",
		"When the domain's certificate is looked at next (renewal or retry), as a Unix time.", []string{"domain"}, nil)
	descPublished = prometheus.NewDesc("tee_ingress_evidence_last_published_timestamp_seconds",
		"When the evidence bundle in force was published, as a Unix time (absent before the first).", nil, nil)

	descRejected     = prometheus.NewDesc("tee_ingress_cluster_rejected_total", "Shared store values that failed to open (changed, moved, another app's) or were rolled back; never served.", nil, nil)
	descStoreErrors  = prometheus.NewDesc("tee_ingress_cluster_store_errors_total", "Failed calls to the shared store (etcd).", nil, nil)
	descStoreCalls   = prometheus.NewDesc("tee_ingress_cluster_store_calls_total", "Calls to the shared store (etcd).", nil, nil)
	descStoreSeconds = prometheus.NewDesc("tee_ingress_cluster_store_call_seconds_total", "Time spent in calls to the shared store; divided by the calls, the mean latency.", nil, nil)

	descAccepted   = prometheus.NewDesc("tee_ingress_connections_accepted_total", "TCP connections accepted on the listen port.", nil, nil)
	descRefused    = prometheus.NewDesc("tee_ingress_connections_refused_total", "Connections closed at once because MAXCONN connections were open.", nil, nil)
	descActive     = prometheus.NewDesc("tee_ingress_connections_active", "Client connections open now.", nil, nil)
	descHandshake  = prometheus.NewDesc("tee_ingress_tls_handshake_errors_total", "Failed or timed-out TLS handshakes.", nil, nil)
	descPPRefused  = prometheus.NewDesc("tee_ingress_proxy_header_refused_total", "Connections closed for their inbound PROXY protocol header: missing, malformed, late, or from a peer not allowed.", nil, nil)
	descChallenges = prometheus.NewDesc("tee_ingress_tls_alpn_challenges_total", "tls-alpn-01 validation handshakes answered.", nil, nil)
	descUnrouted   = prometheus.NewDesc("tee_ingress_unrouted_total", "Connections or requests for a name with no route and no default backend.", nil, nil)
	descBackendErr = prometheus.NewDesc("tee_ingress_backend_errors_total", "Backend dials that failed, backends that reset, 502 answers.", nil, nil)
	descEvidReqs   = prometheus.NewDesc("tee_ingress_evidence_requests_total", "Requests answered by the /evidences/ (or /attestation) handler.", nil, nil)
	descBytes      = prometheus.NewDesc("tee_ingress_forwarded_bytes_total", "Bytes forwarded: the decrypted stream in tcp mode, request and response bodies in http mode.", []string{"direction"}, nil)
)

func (stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descReady, descStepOK, descExpiry, descRenewals, descOrders, descLeader, descFailures, descConsecutive,
		descRateLimited, descNextCheck, descPublished, descAccepted, descRefused, descActive, descHandshake, descPPRefused, descChallenges,
		descUnrouted, descBackendErr, descEvidReqs, descBytes, descRejected, descStoreErrors, descStoreCalls, descStoreSeconds} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
	}
	ready, _ := d.readiness()
	d.mu.Lock()
	sim := "unknown"
	if d.agent != nil {
		sim = strconv.FormatBool(d.agent.IsSimulator())
	}
	challenge := ""
	if d.cfg.CertSource == sourceACME {
		challenge = string(d.cfg.Challenge)
	}
	gauge(descInfo, 1, d.cfg.CertSource, challenge, d.cfg.Mode.String(), sim)
	gauge(descReady, b2f(ready))
	if d.cfg.CertSource != sourceStatic {
		steps := []string{stepAgent}
		if d.cfg.CertSource == sourceACME {
			steps = append(steps, stepAccount, stepDNS, stepEvidence)
			if d.cfg.Cluster.Enabled() {
				steps = append(steps, stepCluster)
			}
		}
		for _, s := range steps {
			gauge(descStepOK, b2f(d.problems[s] == ""), s)
		}
	}
	for _, dom := range d.cfg.Domains {
		if cert := d.certs[dom]; cert != nil {
			gauge(descExpiry, float64(cert.Leaf.NotAfter.Unix()), dom)
		}
		if d.cfg.CertSource != sourceACME {
			continue
		}
		st := d.mgr.StatusOf(d.cfg.groupOf(dom))
		counter(descRenewals, float64(st.RenewalCount), dom)
		counter(descOrders, float64(st.Orders), dom)
		counter(descFailures, float64(st.FailedTotal), dom)
		if d.cfg.Cluster.Enabled() {
			gauge(descLeader, b2f(st.Leader), dom)
		}
		gauge(descConsecutive, float64(st.Failures), dom)
		gauge(descRateLimited, b2f(st.RateLimited), dom)
		if !st.NextCheck.IsZero() {
			gauge(descNextCheck, float64(st.NextCheck.Unix()), dom)
		}
	}
	if leaf := d.fixedLeaf(); leaf != nil {
		gauge(descExpiry, float64(leaf.NotAfter.Unix()), leaf.DNSNames[0])
	}
	if !d.published.IsZero() {
		gauge(descPublished, float64(d.published.Unix()))
	}
	d.mu.Unlock()
	c.collectStore(ch)
	c.collectProxy(ch)
}

// collectStore reports the shared store's counters (replicas only).
func (c stateCollector) collectStore(ch chan<- prometheus.Metric) {
	d := c.d
	counter := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
	}
	if d.shared != nil {
		if cs := d.shared.opened(); cs != nil {
			st := cs.Stats()
			counter(descRejected, float64(st.Rejected))
			counter(descStoreErrors, float64(st.Errors))
			counter(descStoreCalls, float64(st.Calls))
			counter(descStoreSeconds, st.CallTime.Seconds())
		}
	}
}

// collectProxy reports the proxy's counters once it serves.
func (c stateCollector) collectProxy(ch chan<- prometheus.Metric) {
	d := c.d
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
	}
	if d.srv == nil {
		return
	}
	s := d.srv.Stats()
	counter(descAccepted, float64(s.Accepted))
	counter(descRefused, float64(s.Refused))
	gauge(descActive, float64(s.Active))
	counter(descHandshake, float64(s.HandshakeErrors))
	counter(descPPRefused, float64(s.ProxyHeaderRefused))
	counter(descChallenges, float64(s.Challenges))
	counter(descUnrouted, float64(s.Unrouted))
	counter(descBackendErr, float64(s.BackendErrors))
	counter(descEvidReqs, float64(s.EvidenceRequests))
	counter(descBytes, float64(s.BytesToBackends), "to_backend")
	counter(descBytes, float64(s.BytesToClients), "to_client")
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
