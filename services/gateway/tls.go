package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// boolValue is a boolean flag that also takes yes/no and on/off (case-insensitive), as the
// Python SDK reads LLMOPS_TLS, so one environment configures every client.
type boolValue bool

func parseBool(raw string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(raw)) {
	case "1", "true", "yes", "on":
		return true, nil
	case "", "0", "false", "no", "off":
		return false, nil
	}
	return false, errors.New("not a boolean (use 1/0, true/false, yes/no, on/off)")
}

func (b *boolValue) Set(raw string) error {
	value, err := parseBool(raw)
	if err != nil {
		return err
	}
	*b = boolValue(value)
	return nil
}

func (b *boolValue) String() string {
	if b == nil || !*b {
		return "false"
	}
	return "true"
}

func (b *boolValue) IsBoolFlag() bool { return true }

// checkTLSFlags refuses the combinations of TLS flags that cannot be meant. source names where a
// setting came from: its flag, or the environment variable that set it (the LLMOPS_TLS* ones are
// shared with the other clients, so the gateway may be the first to read a half-set group).
func checkTLSFlags(cfg Config, source func(flagName string) string) error {
	unset := func(flagName string) string { return fmt.Sprintf("-%s (%s)", flagName, envNames[flagName]) }
	switch {
	case cfg.TLSCert != "" && cfg.TLSKey == "":
		return fmt.Errorf("%s needs %s, the certificate's private key", source("tls-cert"), unset("tls-key"))
	case cfg.TLSKey != "" && cfg.TLSCert == "":
		return fmt.Errorf("%s needs %s, the certificate it belongs to", source("tls-key"), unset("tls-cert"))
	case cfg.BackendCert != "" && cfg.BackendKey == "":
		return fmt.Errorf("%s needs %s, the client certificate's private key", source("backend-cert"), unset("backend-key"))
	case cfg.BackendKey != "" && cfg.BackendCert == "":
		return fmt.Errorf("%s needs %s, the client certificate it belongs to", source("backend-key"), unset("backend-cert"))
	case cfg.BackendServerName != "" && !cfg.backendUsesTLS():
		return fmt.Errorf("%s needs TLS to the backend (-backend-tls, -backend-ca or -backend-cert)", source("backend-server-name"))
	}
	return nil
}

// servesTLS says whether the gateway listens with HTTPS.
func (cfg Config) servesTLS() bool { return cfg.TLSCert != "" }

// backendUsesTLS says whether the gateway speaks TLS to the backend: asked for, or implied by a
// CA file or a client certificate.
func (cfg Config) backendUsesTLS() bool {
	return cfg.BackendTLS || cfg.BackendCA != "" || cfg.BackendCert != ""
}

// readFile reads a file given by a flag; the error names both.
func readFile(flagName, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-%s: %w", flagName, err)
	}
	return data, nil
}

// loadKeyPair reads a PEM certificate (chain) and its private key; the error names the flags and
// files at fault.
func loadKeyPair(certFlag, certFile, keyFlag, keyFile string) (tls.Certificate, error) {
	certPEM, err := readFile(certFlag, certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readFile(keyFlag, keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("-%s %s with -%s %s: %w", certFlag, certFile, keyFlag, keyFile, err)
	}
	return pair, nil
}

// serverTLSConfig is the HTTPS configuration of the listener, or nil when it serves plain HTTP.
func serverTLSConfig(cfg Config) (*tls.Config, error) {
	if !cfg.servesTLS() {
		return nil, nil
	}
	pair, err := loadKeyPair("tls-cert", cfg.TLSCert, "tls-key", cfg.TLSKey)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// backendCredentials are the transport credentials of the connection to the backend: plaintext,
// or TLS that verifies the server against the system roots or -backend-ca, with a client
// certificate for mutual TLS when one is given.
func backendCredentials(cfg Config) (credentials.TransportCredentials, error) {
	if !cfg.backendUsesTLS() {
		return insecure.NewCredentials(), nil
	}
	config := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.BackendServerName}
	if cfg.BackendCA != "" {
		caPEM, err := readFile("backend-ca", cfg.BackendCA)
		if err != nil {
			return nil, err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("-backend-ca %s: no PEM certificate in the file", cfg.BackendCA)
		}
		config.RootCAs = roots
	}
	if cfg.BackendCert != "" {
		pair, err := loadKeyPair("backend-cert", cfg.BackendCert, "backend-key", cfg.BackendKey)
		if err != nil {
			return nil, err
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(config), nil
}

// isLoopback says whether a bound listener address accepts connections from this machine only.
// An unspecified address (":8000", "0.0.0.0", "[::]") is not loopback.
func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
