// What the commands of ours for upstream controllers share (hack/trainer-controller, hack/training-operator;
// hack/build-tools.sh copies this file beside each main.go): the webhook server on the address and with the
// certificate folder generator/cluster/engines.py gives, the probes on loopback, the logger's flags, and how a
// failure ends the command. Only controller-runtime calls that both pinned versions have.
package main

import (
	"context"
	"flag"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

type serving struct {
	host, certDir, probeAddr string
	port                     int
}

// parseServingFlags registers the serving and logger flags, parses the command line (with the flags main
// registered before) and sets the logger with opts as its defaults.
func parseServingFlags(opts zap.Options) serving {
	var s serving
	flag.StringVar(&s.host, "webhook-host", "127.0.0.1", "Address the webhook server listens on.")
	flag.IntVar(&s.port, "webhook-port", 9443, "Port the webhook server listens on.")
	flag.StringVar(&s.certDir, "webhook-cert-dir", "", "Folder holding the webhook server's tls.crt and tls.key.")
	flag.StringVar(&s.probeAddr, "health-probe-bind-address", "127.0.0.1:8081", "Address of /healthz and /readyz.")
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	return s
}

func (s serving) webhookOptions() webhook.Options {
	return webhook.Options{Host: s.host, Port: s.port, CertDir: s.certDir}
}

func fail(err error, what string) {
	ctrl.Log.WithName("setup").Error(err, what)
	os.Exit(1)
}

// runWithProbes adds /healthz and /readyz (ready once the webhook server serves) and runs the manager.
func runWithProbes(ctx context.Context, mgr ctrl.Manager) {
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		fail(err, "unable to set up /healthz")
	}
	if err := mgr.AddReadyzCheck("readyz", mgr.GetWebhookServer().StartedChecker()); err != nil {
		fail(err, "unable to set up /readyz")
	}
	if err := mgr.Start(ctx); err != nil {
		fail(err, "the manager stopped")
	}
}
