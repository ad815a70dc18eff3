package pika

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// maxPEMFileSize bounds the certificate and key files that ParseURL reads,
// so that a path like /dev/zero cannot exhaust memory.
const maxPEMFileSize = 8 << 20

// fileError returns a *urlError for the file of option at path, wrapping
// cause (which may be nil).
func fileError(option, path, what string, cause error) error {
	return &urlError{msg: fmt.Sprintf("%s %q: %s", option, path, what), cause: cause}
}

// readPEMFile reads the regular file at path, at most maxPEMFileSize bytes.
func readPEMFile(option, path string) ([]byte, error) {
	// Stat before opening: opening a FIFO would block.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fileError(option, path, describeFileError(err), err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fileError(option, path, "not a regular file", nil)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fileError(option, path, describeFileError(err), err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFileSize+1))
	if err != nil {
		return nil, fileError(option, path, describeFileError(err), err)
	}
	if len(data) > maxPEMFileSize {
		return nil, fileError(option, path, "larger than "+strconv.Itoa(maxPEMFileSize>>20)+" MiB; not a PEM file", nil)
	}
	return data, nil
}

// describeFileError says what went wrong with a file, without repeating
// its path.
func describeFileError(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "file not found"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// pemCertificates returns the DER bytes of the CERTIFICATE blocks of data
// and each parsed certificate. Other block types are skipped.
func pemCertificates(option, path string, data []byte) ([][]byte, []*x509.Certificate, error) {
	var (
		ders   [][]byte
		certs  []*x509.Certificate
		blocks int
	)
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks++
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, fileError(option, path, fmt.Sprintf("certificate %d in PEM: %v", len(certs)+1, err), err)
		}
		ders = append(ders, b.Bytes)
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		what := "no certificates in PEM (want -----BEGIN CERTIFICATE----- blocks)"
		if blocks == 0 {
			what = "no PEM data (want -----BEGIN CERTIFICATE----- blocks; a DER file converts with openssl x509 -inform der)"
		}
		return nil, nil, fileError(option, path, what, nil)
	}
	return ders, certs, nil
}

// loadCAFile reads the PEM CA certificates at path into a pool.
func loadCAFile(path string) (*x509.CertPool, error) {
	data, err := readPEMFile("cacertfile", path)
	if err != nil {
		return nil, err
	}
	_, certs, err := pemCertificates("cacertfile", path, data)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// loadKeyPairFiles reads a PEM certificate chain (leaf first) and the PEM
// private key of its leaf.
func loadKeyPairFiles(certPath, keyPath string) (tls.Certificate, error) {
	certPEM, err := readPEMFile("certfile", certPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	ders, certs, err := pemCertificates("certfile", certPath, certPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readPEMFile("keyfile", keyPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := pemPrivateKey(keyPath, keyPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(certs[0].PublicKey) {
		return tls.Certificate{}, &urlError{msg: fmt.Sprintf("keyfile %q does not match certfile %q: the private key is not the key of the first certificate", keyPath, certPath)}
	}
	return tls.Certificate{Certificate: ders, PrivateKey: key, Leaf: certs[0]}, nil
}

// pemPrivateKey returns the first private key in data: PKCS #1 (RSA),
// PKCS #8 or SEC 1 (EC), unencrypted.
func pemPrivateKey(path string, data []byte) (crypto.Signer, error) {
	blocks := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks++
		if !strings.HasSuffix(b.Type, "PRIVATE KEY") {
			continue
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") {
			return nil, fileError("keyfile", path, "the private key is encrypted, which is not supported; decrypt it (openssl pkey -in key.pem -out plain.pem)", nil)
		}
		var (
			key any
			err error
		)
		switch b.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		}
		if err != nil {
			return nil, fileError("keyfile", path, fmt.Sprintf("cannot parse the %s block: %v", b.Type, err), err)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey:
			return k, nil
		case *ecdsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		default:
			return nil, fileError("keyfile", path, fmt.Sprintf("unsupported private key type %T", key), nil)
		}
	}
	what := "no private key in PEM (want a -----BEGIN ... PRIVATE KEY----- block)"
	if blocks == 0 {
		what = "no PEM data (want a -----BEGIN ... PRIVATE KEY----- block)"
	}
	return nil, fileError("keyfile", path, what, nil)
}
