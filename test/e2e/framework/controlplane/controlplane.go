/*
Copyright 2026 The kube-rbd-failover Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Package controlplane runs etcd, kube-apiserver and kube-controller-manager
// on 127.0.0.1 for the end-to-end tests, with generated certificates,
// tokens and kubeconfigs, free ports, logs under the run's directory and a
// deadline on every wait.
package controlplane

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/process"
)

// Binaries are the programs the control plane runs.
type Binaries struct {
	Etcd, APIServer string
}

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	Dir string
	// Kubeconfig is an administrator's kubeconfig (the harness's and the
	// kubelets'); ControllerKubeconfig is kube-controller-manager's.
	Kubeconfig, ControllerKubeconfig string
	Client                           kubernetes.Interface
	Config                           *rest.Config

	pki             *pki
	etcd, apiserver *process.Process
}

// identities are the token-authenticated users. The kubelets and the
// controller manager are cluster administrators: the node authorizer and
// per-controller service accounts are not what these tests are about.
var identities = []struct{ name, token, kubeconfig string }{
	{"admin", "e2e-admin-token", "admin.kubeconfig"},
	{"system:kube-controller-manager", "e2e-kcm-token", "kube-controller-manager.kubeconfig"},
}

// StartAt starts etcd (on 127.0.0.1) and kube-apiserver listening on
// address, and returns once the API server is ready.
func StartAt(ctx context.Context, dir string, bin Binaries, address string) (*ControlPlane, error) {
	for _, b := range []string{bin.Etcd, bin.APIServer} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("control plane binary missing: %w (hack/test-e2e.sh builds it)", err)
		}
	}
	cp := &ControlPlane{Dir: dir}
	var err error
	if cp.pki, err = newPKI(filepath.Join(dir, "pki"), address); err != nil {
		return nil, fmt.Errorf("generate certificates: %w", err)
	}
	logs := filepath.Join(dir, "log")
	etcdPort, err := process.FreePort()
	if err != nil {
		return nil, err
	}
	peerPort, err := process.FreePort()
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	cp.etcd, err = process.Start("etcd", logs, nil, bin.Etcd,
		"--name=e2e", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=e2e="+peerURL,
		// A test cluster thrown away after the run: no fsync.
		"--unsafe-no-fsync")
	if err != nil {
		return nil, err
	}
	if err := cp.etcd.WaitFor(time.Minute, func() error { return httpOK(ctx, nil, etcdURL+"/health", "") }); err != nil {
		cp.Stop()
		return nil, err
	}

	tokens := filepath.Join(dir, "pki", "tokens.csv")
	var lines []string
	for _, id := range identities {
		lines = append(lines, fmt.Sprintf("%s,%s,%s,system:masters", id.token, id.name, id.name))
	}
	if err := os.WriteFile(tokens, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	port, err := process.FreePort()
	if err != nil {
		return nil, err
	}
	server := "https://" + net.JoinHostPort(address, strconv.Itoa(port))
	cp.apiserver, err = process.Start("kube-apiserver", logs, nil, bin.APIServer,
		"--etcd-servers="+etcdURL,
		"--bind-address="+address, "--advertise-address="+address, "--secure-port="+strconv.Itoa(port),
		"--cert-dir="+filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file="+cp.pki.ServingCert, "--tls-private-key-file="+cp.pki.ServingKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+cp.pki.SAPub, "--service-account-signing-key-file="+cp.pki.SAKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--token-auth-file="+tokens, "--authorization-mode=RBAC",
		// No service account controller runs: pods get no token volume.
		"--disable-admission-plugins=ServiceAccount",
		"--enable-priority-and-fairness=false",
		"--v=1")
	if err != nil {
		cp.Stop()
		return nil, err
	}
	for _, id := range identities {
		path := filepath.Join(dir, id.kubeconfig)
		if err := writeKubeconfig(path, server, cp.pki.CA, id.name, id.token); err != nil {
			cp.Stop()
			return nil, err
		}
		if id.kubeconfig == "admin.kubeconfig" {
			cp.Kubeconfig = path
		} else {
			cp.ControllerKubeconfig = path
		}
	}
	caPEM, err := os.ReadFile(cp.pki.CA)
	if err != nil {
		return nil, err
	}
	if err := cp.apiserver.WaitFor(2*time.Minute, func() error {
		return httpOK(ctx, caPEM, server+"/readyz", identities[0].token)
	}); err != nil {
		cp.Stop()
		return nil, err
	}
	if cp.Config, err = clientcmd.BuildConfigFromFlags("", cp.Kubeconfig); err != nil {
		cp.Stop()
		return nil, err
	}
	if cp.Client, err = kubernetes.NewForConfig(cp.Config); err != nil {
		cp.Stop()
		return nil, err
	}
	return cp, nil
}

// Stop stops kube-apiserver and etcd.
func (cp *ControlPlane) Stop() {
	if cp.apiserver != nil {
		cp.apiserver.Stop(10 * time.Second)
	}
	if cp.etcd != nil {
		cp.etcd.Stop(10 * time.Second)
	}
}

func writeKubeconfig(path, server, ca, user, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: user}
	cfg.CurrentContext = "e2e"
	return clientcmd.WriteToFile(*cfg, path)
}

// httpOK GETs url and wants 200. caPEM nil means plain HTTP or a server
// certificate nobody issued (kube-controller-manager's self-signed one).
func httpOK(ctx context.Context, caPEM []byte, url, token string) error {
	transport := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // self-signed health endpoint
	if caPEM != nil {
		cfg := &rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}}
		tlsConfig, err := rest.TLSConfigFor(cfg)
		if err != nil {
			return err
		}
		transport = &http.Transport{TLSClientConfig: tlsConfig}
	}
	defer transport.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
