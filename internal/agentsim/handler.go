package agentsim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence/dstackfmt"
)

// maxRequestBody bounds request bodies; real requests are a few hundred bytes.
const maxRequestBody = 1 << 20

// agentVersion is what Version reports: a real agent version with build
// metadata that says what answered.
const agentVersion = "0.5.6+simulator"

// Handler returns the agent's HTTP API, for serving on a listener of the
// caller's choosing (Serve uses it on a unix socket).
func (s *Simulator) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

func (s *Simulator) serveHTTP(w http.ResponseWriter, r *http.Request) {
	method := strings.TrimPrefix(r.URL.Path, "/")
	status, body := s.dispatch(r, method)
	s.log.Debug("dstack simulator request", "method", method, "status", status)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

// dispatch runs one RPC. Like the real agent (prpc), it takes the arguments
// as a JSON body on POST or as query parameters on GET, and reports failures
// as HTTP 400 with {"error": "..."}.
func (s *Simulator) dispatch(r *http.Request, method string) (int, []byte) {
	var handle func(args []byte) (any, error)
	switch method {
	case "Info", "prpc/Tappd.Info":
		handle = func([]byte) (any, error) { return s.info() }
	case "Version", "prpc/Tappd.Version":
		handle = func([]byte) (any, error) {
			return map[string]string{"version": agentVersion, "rev": "tee-ingress agentsim"}, nil
		}
	case "GetQuote":
		handle = s.getQuote
	case "prpc/Tappd.RawQuote":
		handle = s.rawQuote
	case "GetKey":
		handle = s.getKey
	case "GetTlsKey":
		handle = s.getTLSKey
	case "EmitEvent":
		handle = s.emitEvent
	default:
		return http.StatusNotFound, errorBody(fmt.Sprintf("method not found: %q", method))
	}
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return http.StatusMethodNotAllowed, errorBody("use POST with a JSON body, or GET with query parameters")
	}
	args, err := requestArgs(r)
	if err != nil {
		return http.StatusBadRequest, errorBody(err.Error())
	}
	res, err := handle(args)
	if err != nil {
		return http.StatusBadRequest, errorBody(err.Error())
	}
	if b, ok := res.([]byte); ok {
		return http.StatusOK, b
	}
	b, err := marshalJSON(res)
	if err != nil {
		return http.StatusInternalServerError, errorBody(err.Error())
	}
	return http.StatusOK, b
}

// errorBody is the agent's error encoding (serde_json pretty-printed).
func errorBody(msg string) []byte {
	b, err := json.MarshalIndent(map[string]string{"error": msg}, "", "  ")
	if err != nil {
		return []byte(`{"error": "failed to encode the error"}`)
	}
	return b
}

// requestArgs returns the arguments as a JSON object: the POST body, or the
// query parameters of a GET as string fields.
func requestArgs(r *http.Request) ([]byte, error) {
	if r.Method == http.MethodGet {
		q := map[string]string{}
		for k, v := range r.URL.Query() {
			if len(v) > 0 {
				q[k] = v[0]
			}
		}
		return marshalJSON(q)
	}
	b, err := readAll(r.Body, maxRequestBody)
	if err != nil {
		return nil, fmt.Errorf("reading the request: %w", err)
	}
	return b, nil
}

// decodeArgs decodes a JSON object into v; an empty body is an empty object.
// Unknown fields are ignored, as serde does.
func decodeArgs(b []byte, v any) error {
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding the request: want a JSON object: %w", err)
	}
	return nil
}

// decodeHexField decodes a hex argument, naming the field when it is not hex.
func decodeHexField(name, v string) ([]byte, error) {
	b, err := hex.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("field %q must be hex-encoded bytes: %w", name, err)
	}
	return b, nil
}

// decodeQuoteArgs reads GetQuote's {"report_data": hex} (at most 64 bytes)
// and right-pads it with zeros to 64 bytes, as the agent does.
func decodeQuoteArgs(b []byte) ([64]byte, error) {
	var out [64]byte
	var args struct {
		ReportData string `json:"report_data"`
	}
	if err := decodeArgs(b, &args); err != nil {
		return out, err
	}
	rd, err := decodeHexField("report_data", args.ReportData)
	if err != nil {
		return out, err
	}
	if len(rd) > 64 {
		return out, fmt.Errorf("report_data is %d bytes; at most 64 are accepted (shorter values are right-padded with zeros)", len(rd))
	}
	copy(out[:], rd)
	return out, nil
}

// decodeRawQuoteArgs reads tappd RawQuote's report_data, which must be
// exactly 64 bytes.
func decodeRawQuoteArgs(b []byte) ([64]byte, error) {
	var out [64]byte
	var args struct {
		ReportData string `json:"report_data"`
	}
	if err := decodeArgs(b, &args); err != nil {
		return out, err
	}
	rd, err := decodeHexField("report_data", args.ReportData)
	if err != nil {
		return out, err
	}
	if len(rd) != 64 {
		return out, fmt.Errorf("report_data is %d bytes; RawQuote takes exactly 64 (128 hex digits)", len(rd))
	}
	copy(out[:], rd)
	return out, nil
}

type keyArgs struct {
	Path      string `json:"path"`
	Purpose   string `json:"purpose"`
	Algorithm string `json:"algorithm"`
}

// decodeKeyArgs reads GetKey's {"path","purpose","algorithm"}.
func decodeKeyArgs(b []byte) (keyArgs, error) {
	var args keyArgs
	if err := decodeArgs(b, &args); err != nil {
		return args, err
	}
	switch args.Algorithm {
	case "", "secp256k1", "k256", "ed25519":
	default:
		return args, fmt.Errorf("unsupported algorithm %q: the agent accepts secp256k1 (or k256), ed25519, or empty for secp256k1", args.Algorithm)
	}
	return args, nil
}

type tlsKeyArgs struct {
	Subject         string   `json:"subject"`
	AltNames        []string `json:"alt_names"`
	UsageRATLS      bool     `json:"usage_ra_tls"`
	UsageServerAuth bool     `json:"usage_server_auth"`
	UsageClientAuth bool     `json:"usage_client_auth"`
	NotBefore       *uint64  `json:"not_before"`
	NotAfter        *uint64  `json:"not_after"`
	WithAppInfo     bool     `json:"with_app_info"`
}

// decodeTLSKeyArgs reads GetTlsKey's arguments; times are Unix seconds.
func decodeTLSKeyArgs(b []byte) (tlsKeyArgs, error) {
	var args tlsKeyArgs
	if err := decodeArgs(b, &args); err != nil {
		return args, err
	}
	if args.NotBefore != nil && args.NotAfter != nil && *args.NotAfter <= *args.NotBefore {
		return args, fmt.Errorf("not_after (%d) must be later than not_before (%d)", *args.NotAfter, *args.NotBefore)
	}
	const maxUnix = 1 << 40 // year 36812: anything above is a unit mistake
	for name, v := range map[string]*uint64{"not_before": args.NotBefore, "not_after": args.NotAfter} {
		if v != nil && *v > maxUnix {
			return args, fmt.Errorf("%s (%d) is not a Unix time in seconds", name, *v)
		}
	}
	return args, nil
}

type emitArgs struct {
	Event   string `json:"event"`
	Payload string `json:"payload"`
}

// decodeEmitArgs reads EmitEvent's {"event", "payload": hex}.
func decodeEmitArgs(b []byte) (string, []byte, error) {
	var args emitArgs
	if err := decodeArgs(b, &args); err != nil {
		return "", nil, err
	}
	if args.Event == "" {
		return "", nil, fmt.Errorf("field %q is empty; name the event", "event")
	}
	p, err := decodeHexField("payload", args.Payload)
	if err != nil {
		return "", nil, err
	}
	return args.Event, p, nil
}

func (s *Simulator) getQuote(b []byte) (any, error) {
	rd, err := decodeQuoteArgs(b)
	if err != nil {
		return nil, err
	}
	return s.QuoteFor(rd)
}

func (s *Simulator) rawQuote(b []byte) (any, error) {
	rd, err := decodeRawQuoteArgs(b)
	if err != nil {
		return nil, err
	}
	quote, log, err := s.quote(rd)
	if err != nil {
		return nil, err
	}
	return legacyQuoteResponse{Quote: hex.EncodeToString(quote), EventLog: log, HashAlgorithm: "raw"}, nil
}

func (s *Simulator) emitEvent(b []byte) (any, error) {
	name, payload, err := decodeEmitArgs(b)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.appEvents = append(s.appEvents, runtimeEvent(name, payload))
	s.mu.Unlock()
	return struct{}{}, nil
}

func (s *Simulator) getKey(b []byte) (any, error) {
	args, err := decodeKeyArgs(b)
	if err != nil {
		return nil, err
	}
	key := appKey(s.kmsSecret, s.appID, args.Path)
	return struct {
		Key            string   `json:"key"`
		SignatureChain []string `json:"signature_chain"`
	}{
		Key: hex.EncodeToString(key),
		SignatureChain: []string{
			hex.EncodeToString(placeholderSignature(s.kmsSecret, []byte("key"), []byte(args.Purpose), key)),
			hex.EncodeToString(placeholderSignature(s.kmsSecret, []byte("app"), s.appID)),
		},
	}, nil
}

// info is the Info response, fields in the order of the agent's AppInfo.
type info struct {
	AppID           string `json:"app_id"`
	InstanceID      string `json:"instance_id"`
	AppCert         string `json:"app_cert"`
	TCBInfo         string `json:"tcb_info"`
	AppName         string `json:"app_name"`
	DeviceID        string `json:"device_id"`
	MrAggregated    string `json:"mr_aggregated"`
	OSImageHash     string `json:"os_image_hash"`
	KeyProviderInfo string `json:"key_provider_info"`
	ComposeHash     string `json:"compose_hash"`
	VMConfig        string `json:"vm_config"`
	CloudVendor     string `json:"cloud_vendor"`
	CloudProduct    string `json:"cloud_product"`
}

// tcbInfo is Info's tcb_info, keys sorted as serde_json's json! emits them.
type tcbInfo struct {
	AppCompose   string      `json:"app_compose"`
	ComposeHash  string      `json:"compose_hash"`
	DeviceID     string      `json:"device_id"`
	EventLog     []wireEvent `json:"event_log"`
	MrAggregated string      `json:"mr_aggregated"`
	MRTD         string      `json:"mrtd"`
	OSImageHash  string      `json:"os_image_hash"`
	RTMR0        string      `json:"rtmr0"`
	RTMR1        string      `json:"rtmr1"`
	RTMR2        string      `json:"rtmr2"`
	RTMR3        string      `json:"rtmr3"`
}

func (s *Simulator) info() (any, error) {
	events := s.events()
	rtmrs := replay(events)
	agg := sha256.New()
	agg.Write(mrTD())
	for _, r := range rtmrs {
		agg.Write(r[:])
	}
	mrAggregated := hex.EncodeToString(agg.Sum(nil))
	osImage := hex.EncodeToString(labelHash256("os-image"))
	tcb, err := jsonIndent(tcbInfo{
		AppCompose:   string(s.compose),
		ComposeHash:  hex.EncodeToString(s.composeHash),
		DeviceID:     hex.EncodeToString(s.deviceID),
		EventLog:     wire(events, s.stripped),
		MrAggregated: mrAggregated,
		MRTD:         hex.EncodeToString(mrTD()),
		OSImageHash:  osImage,
		RTMR0:        hex.EncodeToString(rtmrs[0][:]),
		RTMR1:        hex.EncodeToString(rtmrs[1][:]),
		RTMR2:        hex.EncodeToString(rtmrs[2][:]),
		RTMR3:        hex.EncodeToString(rtmrs[3][:]),
	})
	if err != nil {
		return nil, err
	}
	return info{
		AppID:           hex.EncodeToString(s.appID),
		InstanceID:      hex.EncodeToString(s.instanceID),
		TCBInfo:         tcb,
		AppName:         s.appName,
		DeviceID:        hex.EncodeToString(s.deviceID),
		MrAggregated:    mrAggregated,
		OSImageHash:     osImage,
		KeyProviderInfo: string(s.keyProvider),
		ComposeHash:     hex.EncodeToString(s.composeHash),
		VMConfig:        s.vmConfig,
		CloudVendor:     "dstack-simulator",
		CloudProduct:    "tee-ingress agentsim (not a TEE)",
	}, nil
}

func jsonIndent(v any) (string, error) {
	b, err := marshalJSON(v)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return "", fmt.Errorf("indenting JSON: %w", err)
	}
	return out.String(), nil
}

// makeAppCA derives the CA that signs GetTlsKey certificates. Like the app
// CA a KMS hands an app, it depends on the KMS secret and the app ID only.
func (s *Simulator) makeAppCA() error {
	key, err := deriveP256(append(append([]byte{}, s.kmsSecret...), s.appID...), "app-ca")
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(s.appID, "app-ca"),
		Subject:               pkix.Name{CommonName: "dstack-simulator App CA", Organization: []string{simOrg}},
		NotBefore:             certNotBefore,
		NotAfter:              certNotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	ca, err := createCert(tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("creating the simulated app CA: %w", err)
	}
	s.appCA, s.appCAKey = ca, key
	return nil
}

// getTLSKey makes a fresh P-256 key per call, as the agent does, with a
// certificate from the app CA. With usage_ra_tls the certificate carries a
// quote over SHA-512("ratls-cert:" || its public key) as a dstack
// attestation (OID 1.3.6.1.4.1.62397.1.8), as dstack's agent writes it;
// with_app_info is accepted but adds no app-info extension.
func (s *Simulator) getTLSKey(b []byte) (any, error) {
	args, err := decodeTLSKeyArgs(b)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a TLS key: %w", err)
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating a serial number: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: args.Subject, Organization: []string{simOrg}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if args.NotBefore != nil {
		tmpl.NotBefore = time.Unix(int64(*args.NotBefore), 0)
	}
	if args.NotAfter != nil {
		tmpl.NotAfter = time.Unix(int64(*args.NotAfter), 0)
	}
	for _, n := range args.AltNames {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if args.UsageServerAuth {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if args.UsageClientAuth {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if args.UsageRATLS {
		ext, err := s.raTLSExtension(&key.PublicKey)
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, ext)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.appCA, &key.PublicKey, s.appCAKey)
	if err != nil {
		return nil, fmt.Errorf("issuing the TLS certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding the TLS key: %w", err)
	}
	return struct {
		Key              string   `json:"key"`
		CertificateChain []string `json:"certificate_chain"`
	}{
		Key: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})),
		CertificateChain: []string{
			string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
			string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.appCA.Raw})),
		},
	}, nil
}

// raTLSExtension is the attestation extension of an RA-TLS certificate for
// pub.
func (s *Simulator) raTLSExtension(pub *ecdsa.PublicKey) (pkix.Extension, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return pkix.Extension{}, err
	}
	rd := dstackfmt.RATLSReportData(spki)
	quote, log, err := s.quote(rd)
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("quoting the RA-TLS key: %w", err)
	}
	events, err := dstackfmt.EventsFromJSON(log)
	if err != nil {
		return pkix.Extension{}, err
	}
	return dstackfmt.Extension(dstackfmt.OIDAttestation, dstackfmt.Encode(&dstackfmt.Attestation{Quote: quote, Events: events, ReportData: rd}))
}
