// Kubeflow Trainer's controller manager as the local cluster runs it (hack/build-tools.sh trainer builds it
// against the pinned github.com/kubeflow/trainer/v2 module). Upstream's command takes its webhook server's
// address from a configuration file but writes the serving certificate to a fixed folder under /tmp (or makes
// its own into a Secret); several local clusters run side by side here, each with the certificate that
// generator/cluster/engines.py makes, and it registers the webhooks itself. So this command sets the webhook
// server's address and certificate folder and leaves the certificate management out; the configuration is
// upstream's defaults, and the controllers, runtimes and webhooks are Trainer's own, set up as upstream sets
// them up (the status server stays off, as its feature gate is by default). The flags, probes and start are
// hack/controller-serving/serving.go's.
package main

import (
	"crypto/tls"

	apiruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlpkg "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	jobsetv1alpha2 "sigs.k8s.io/jobset/api/jobset/v1alpha2"
	schedulerpluginsv1alpha1 "sigs.k8s.io/scheduler-plugins/apis/scheduling/v1alpha1"
	volcanov1beta1 "volcano.sh/apis/pkg/apis/scheduling/v1beta1"

	configapi "github.com/kubeflow/trainer/v2/pkg/apis/config/v1alpha1"
	trainer "github.com/kubeflow/trainer/v2/pkg/apis/trainer/v1alpha1"
	"github.com/kubeflow/trainer/v2/pkg/config"
	"github.com/kubeflow/trainer/v2/pkg/controller"
	runtimecore "github.com/kubeflow/trainer/v2/pkg/runtime/core"
	"github.com/kubeflow/trainer/v2/pkg/webhooks"
)

func main() {
	serve := parseServingFlags(zap.Options{})

	scheme := apiruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(configapi.AddToScheme(scheme))
	utilruntime.Must(trainer.AddToScheme(scheme))
	utilruntime.Must(jobsetv1alpha2.AddToScheme(scheme))
	utilruntime.Must(schedulerpluginsv1alpha1.AddToScheme(scheme))
	utilruntime.Must(volcanov1beta1.AddToScheme(scheme))

	// upstream's default configuration, then what differs here: loopback, our certificate, no metrics
	options, cfg, err := config.Load(scheme, "", false)
	if err != nil {
		fail(err, "unable to load the default configuration")
	}
	// HTTP/2 stays off, as upstream keeps it off by default
	http1 := func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }
	webhookOptions := serve.webhookOptions()
	webhookOptions.TLSOpts = []func(*tls.Config){http1}
	options.WebhookServer = webhook.NewServer(webhookOptions)
	options.Metrics = metricsserver.Options{BindAddress: "0"}
	options.HealthProbeBindAddress = serve.probeAddr
	options.LeaderElection = false
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), options)
	if err != nil {
		fail(err, "unable to create the manager")
	}
	ctx := ctrl.SetupSignalHandler()
	runtimes, err := runtimecore.New(ctx, mgr.GetClient(), mgr.GetFieldIndexer(), &cfg)
	if err != nil {
		fail(err, "unable to set up the training runtimes")
	}
	if name, err := controller.SetupControllers(mgr, runtimes, ctrlpkg.Options{}); err != nil {
		fail(err, "unable to set up controller "+name)
	}
	if name, err := webhooks.Setup(mgr, runtimes); err != nil {
		fail(err, "unable to set up webhook "+name)
	}
	runWithProbes(ctx, mgr)
}
