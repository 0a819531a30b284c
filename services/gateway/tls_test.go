package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// testPKI is a CA and the certificates it signed, as PEM files in a temporary directory.
type testPKI struct {
	roots                 *x509.CertPool
	server                tls.Certificate
	caFile                string
	serverCert, serverKey string // SANs localhost and 127.0.0.1
	clientCert, clientKey string
	otherCert, otherKey   string // a certificate for someone else, signed by the same CA
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
	write := func(name, blockType string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	writeKey := func(name string, key *ecdsa.PrivateKey) string {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return write(name, "PRIVATE KEY", der)
	}
	serial := int64(0)
	notBefore := time.Now().Add(-time.Hour)
	template := func(cn string) *x509.Certificate {
		serial++
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    notBefore,
			NotAfter:     notBefore.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
		}
	}

	caKey := newKey()
	caTemplate := template("llmops test CA")
	caTemplate.IsCA = true
	caTemplate.BasicConstraintsValid = true
	caTemplate.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string, tmpl *x509.Certificate) (certFile, keyFile string) {
		key := newKey()
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".crt", "CERTIFICATE", der), writeKey(name+".key", key)
	}

	p := &testPKI{roots: x509.NewCertPool(), caFile: write("ca.crt", "CERTIFICATE", caDER)}
	p.roots.AddCert(ca)

	serverTemplate := template("llmops services")
	serverTemplate.DNSNames = []string{"localhost"}
	serverTemplate.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	serverTemplate.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	p.serverCert, p.serverKey = issue("server", serverTemplate)
	if p.server, err = tls.LoadX509KeyPair(p.serverCert, p.serverKey); err != nil {
		t.Fatal(err)
	}

	clientTemplate := template("llmops-gateway")
	clientTemplate.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	p.clientCert, p.clientKey = issue("client", clientTemplate)

	otherTemplate := template("someone else")
	otherTemplate.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	p.otherCert, p.otherKey = issue("other", otherTemplate)
	return p
}

// startMutualTLSBackend serves the fake services over TLS with the PKI's server certificate,
// refusing clients without a certificate from the same CA.
func startMutualTLSBackend(t *testing.T, p *testPKI) *backend {
	t.Helper()
	return startBackend(t, grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientCAs:    p.roots,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	})))
}

// getStatus answers a GET's status code, failing the test when no answer comes within 10 s.
func getStatus(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestReadyzOverMutualTLSToTheBackend(t *testing.T) {
	p := newTestPKI(t)
	b := startMutualTLSBackend(t, p)
	mutual := func(cfg Config) Config {
		cfg.BackendCA, cfg.BackendCert, cfg.BackendKey = p.caFile, p.clientCert, p.clientKey
		return cfg
	}

	gw := startGateway(t, mutual(testConfig(b.address)))
	if code, body := getStatus(t, http.DefaultClient, gw.URL+"/readyz"); code != http.StatusOK {
		t.Fatalf("with the CA and a client certificate: /readyz %d %s", code, body)
	}
	if code, body := getStatus(t, http.DefaultClient, gw.URL+"/v1/promptTemplates/summarization"); code != http.StatusOK {
		t.Errorf("a route over mutual TLS: %d %s", code, body)
	}
	if md := (<-b.registry.calls).md; len(md.Get("x-request-id")) != 1 {
		t.Errorf("metadata over TLS: %v", md)
	}

	// The certificate names localhost: checked as the server name while dialling 127.0.0.1.
	named := mutual(testConfig(b.address))
	named.BackendServerName = "localhost"
	if code, body := getStatus(t, http.DefaultClient, startGateway(t, named).URL+"/readyz"); code != http.StatusOK {
		t.Errorf("-backend-server-name localhost: /readyz %d %s", code, body)
	}

	// Every way of failing the handshake answers 503 at once rather than hanging.
	wrongName := mutual(testConfig(b.address))
	wrongName.BackendServerName = "services.example"
	noClientCert := testConfig(b.address)
	noClientCert.BackendCA = p.caFile
	systemRoots := testConfig(b.address)
	systemRoots.BackendTLS = true
	systemRoots.BackendCert, systemRoots.BackendKey = p.clientCert, p.clientKey
	for name, cfg := range map[string]Config{
		"without a client certificate":    noClientCert,
		"verifying with the system roots": systemRoots,
		"a name not in the certificate":   wrongName,
		"plaintext":                       testConfig(b.address),
	} {
		if code, body := getStatus(t, http.DefaultClient, startGateway(t, cfg).URL+"/readyz"); code != http.StatusServiceUnavailable {
			t.Errorf("%s: /readyz %d %s, want 503", name, code, body)
		}
	}
}

// runGateway runs the real server function until the test ends and answers the URL it printed.
func runGateway(t *testing.T, cfg Config, logger *slog.Logger) (url string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reader, writer := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, cfg, logger, writer)
		_ = writer.CloseWithError(io.EOF)
		done <- err
	}()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("run did not stop")
		}
	}
	t.Cleanup(stop)
	line, err := bufio.NewReader(reader).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("no address line: %v (run: %v)", err, <-done)
	}
	fields := strings.Fields(line)
	if len(fields) < 4 || fields[0] != "llmops-gateway" || fields[2] != "on" {
		t.Fatalf("address line %q", line)
	}
	return fields[3], stop
}

func TestGatewayServesHTTPSWithACertificate(t *testing.T) {
	p := newTestPKI(t)
	b := startBackend(t)
	cfg := testConfig(b.address)
	cfg.TLSCert, cfg.TLSKey = p.serverCert, p.serverKey
	url, _ := runGateway(t, cfg, slog.New(slog.DiscardHandler))
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("address %q, want https://127.0.0.1:…", url)
	}

	if config, err := serverTLSConfig(cfg); err != nil || config.MinVersion != tls.VersionTLS12 {
		t.Errorf("server TLS config: %v, MinVersion %#x", err, config.MinVersion)
	}

	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.roots}}}
	defer trusting.CloseIdleConnections()
	if code, body := getStatus(t, trusting, url+"/healthz"); code != http.StatusOK {
		t.Errorf("HTTPS /healthz: %d %s", code, body)
	}
	if code, body := getStatus(t, trusting, url+"/readyz"); code != http.StatusOK {
		t.Errorf("HTTPS /readyz: %d %s", code, body)
	}

	// Plain HTTP to the same port gets no 200 (Go answers 400 to a request that is not TLS).
	plain := "http://" + strings.TrimPrefix(url, "https://")
	resp, err := http.Get(plain + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP to the HTTPS port: %d", resp.StatusCode)
		}
	}

	// A client that does not trust the CA is refused in the handshake.
	if resp, err := http.Get(url + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("a client without the CA got %d", resp.StatusCode)
	}
}

func TestTLSFlagsAndEnvironment(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, c := range []struct {
		args []string
		want string // in the error
	}{
		{[]string{"-tls-cert", "c.pem"}, "-tls-cert needs -tls-key (LLMOPS_GATEWAY_TLS_KEY_FILE)"},
		{[]string{"-tls-key", "k.pem"}, "-tls-key needs -tls-cert (LLMOPS_GATEWAY_TLS_CERT_FILE)"},
		{[]string{"-backend-cert", "c.pem"}, "-backend-cert needs -backend-key (LLMOPS_TLS_KEY_FILE)"},
		{[]string{"-backend-key", "k.pem", "-backend-tls"}, "-backend-key needs -backend-cert (LLMOPS_TLS_CERT_FILE)"},
		{[]string{"-backend-server-name", "services.example"}, "-backend-server-name needs TLS"},
		{[]string{"-backend-tls=maybe"}, "backend-tls"},
	} {
		if _, err := parseConfig(c.args, noEnv, io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one saying %q", c.args, err, c.want)
		}
	}
	// A half-set group in the environment is named by its variables.
	for name, want := range map[string]string{
		"LLMOPS_TLS_CERT_FILE":   "LLMOPS_TLS_CERT_FILE needs -backend-key (LLMOPS_TLS_KEY_FILE)",
		"LLMOPS_TLS_SERVER_NAME": "LLMOPS_TLS_SERVER_NAME needs TLS to the backend",
	} {
		_, err := parseConfig(nil, func(k string) string { return map[string]string{name: "x"}[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s alone: error %v, want one saying %q", name, err, want)
		}
	}

	tlsFrom := func(raw string) (bool, error) {
		cfg, err := parseConfig(nil, func(k string) string { return map[string]string{"LLMOPS_TLS": raw}[k] }, io.Discard)
		return cfg.BackendTLS, err
	}
	for raw, want := range map[string]bool{"1": true, "true": true, "YES": true, " on ": true, "0": false, "False": false, "no": false, "off": false} {
		if got, err := tlsFrom(raw); err != nil || got != want {
			t.Errorf("LLMOPS_TLS=%q: %v %v, want %v", raw, got, err, want)
		}
	}
	if _, err := tlsFrom("maybe"); err == nil || !strings.Contains(err.Error(), "LLMOPS_TLS") {
		t.Errorf("LLMOPS_TLS=maybe: %v", err)
	}

	env := map[string]string{
		"LLMOPS_GATEWAY_TLS_CERT_FILE": "gw.crt",
		"LLMOPS_GATEWAY_TLS_KEY_FILE":  "gw.key",
		"LLMOPS_TLS":                   "1",
		"LLMOPS_TLS_CA_FILE":           "ca.crt",
		"LLMOPS_TLS_CERT_FILE":         "client.crt",
		"LLMOPS_TLS_KEY_FILE":          "client.key",
		"LLMOPS_TLS_SERVER_NAME":       "services.internal",
	}
	cfg, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{TLSCert: "gw.crt", TLSKey: "gw.key", BackendTLS: true, BackendCA: "ca.crt", BackendCert: "client.crt", BackendKey: "client.key", BackendServerName: "services.internal"}
	if cfg.TLSCert != want.TLSCert || cfg.TLSKey != want.TLSKey || cfg.BackendTLS != want.BackendTLS || cfg.BackendCA != want.BackendCA ||
		cfg.BackendCert != want.BackendCert || cfg.BackendKey != want.BackendKey || cfg.BackendServerName != want.BackendServerName {
		t.Errorf("from the environment: %+v", cfg)
	}

	// A flag beats the environment; a CA file or a client certificate implies TLS.
	cfg, err = parseConfig([]string{"-backend-tls=false"}, func(k string) string { return map[string]string{"LLMOPS_TLS": "yes"}[k] }, io.Discard)
	if err != nil || cfg.BackendTLS || cfg.backendUsesTLS() {
		t.Errorf("-backend-tls=false over LLMOPS_TLS=yes: %+v %v", cfg, err)
	}
	cfg, err = parseConfig([]string{"-backend-tls"}, noEnv, io.Discard)
	if err != nil || !cfg.BackendTLS {
		t.Errorf("-backend-tls: %+v %v", cfg, err)
	}
	cfg, err = parseConfig([]string{"-backend-ca", "ca.crt"}, noEnv, io.Discard)
	if err != nil || cfg.BackendTLS || !cfg.backendUsesTLS() || cfg.servesTLS() {
		t.Errorf("-backend-ca alone: %+v %v", cfg, err)
	}
}

func TestUnreadableOrInvalidTLSFilesFailAtStartup(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(*Config)
		want []string // in the error
	}{
		{"CA missing", func(c *Config) { c.BackendCA = missing }, []string{"-backend-ca", missing}},
		{"CA not PEM", func(c *Config) { c.BackendCA = garbage }, []string{"-backend-ca", garbage}},
		{"client certificate missing", func(c *Config) { c.BackendCert, c.BackendKey = missing, p.clientKey }, []string{"-backend-cert", missing}},
		{"client key missing", func(c *Config) { c.BackendCert, c.BackendKey = p.clientCert, missing }, []string{"-backend-key", missing}},
		{"client key of another certificate", func(c *Config) { c.BackendCert, c.BackendKey = p.clientCert, p.otherKey }, []string{"-backend-cert", p.clientCert, "-backend-key", p.otherKey}},
		{"server certificate missing", func(c *Config) { c.TLSCert, c.TLSKey = missing, p.serverKey }, []string{"-tls-cert", missing}},
		{"server certificate not PEM", func(c *Config) { c.TLSCert, c.TLSKey = garbage, p.serverKey }, []string{"-tls-cert", garbage}},
	} {
		cfg := testConfig("127.0.0.1:1")
		c.edit(&cfg)
		// run returns before listening; main then exits 1 with the error.
		err := run(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, want := range c.want {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %q does not name %q", c.name, err, want)
			}
		}
	}
}

// logRecords decodes the JSON lines of a slog.JSONHandler.
func logRecords(t *testing.T, data []byte) []map[string]any {
	t.Helper()
	var records []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var record map[string]any
		if err := json.Unmarshal(line, &record); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		records = append(records, record)
	}
	return records
}

func TestPlaintextOnANonLoopbackAddressIsWarnedAbout(t *testing.T) {
	p := newTestPKI(t)
	b := startBackend(t)
	for _, c := range []struct {
		listen string
		tls    bool
		warned bool
	}{
		{"0.0.0.0:0", false, true},
		{":0", false, true},
		{"127.0.0.1:0", false, false},
		{"localhost:0", false, false},
		{"0.0.0.0:0", true, false},
	} {
		cfg := testConfig(b.address)
		cfg.Listen = c.listen
		if c.tls {
			cfg.TLSCert, cfg.TLSKey = p.serverCert, p.serverKey
		}
		var logs bytes.Buffer
		_, stop := runGateway(t, cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
		stop() // the logs are complete, and no longer written, once run has returned
		warnings := 0
		for _, record := range logRecords(t, logs.Bytes()) {
			if record["msg"] == "serving plaintext HTTP on a non-loopback address" {
				warnings++
				if record["level"] != "WARN" || record["address"] == nil {
					t.Errorf("%s: warning %v", c.listen, record)
				}
			}
		}
		if want := map[bool]int{true: 1, false: 0}[c.warned]; warnings != want {
			t.Errorf("-listen %s (TLS %v): %d warnings, want %d: %s", c.listen, c.tls, warnings, want, logs.String())
		}
	}
}
