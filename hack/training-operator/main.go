// The Kubeflow training operator's manager as the local cluster runs it, for PyTorchJobs only
// (hack/build-tools.sh training-operator builds it against the pinned github.com/kubeflow/training-operator
// module). Upstream's command listens for webhooks on every interface and makes its own certificate into a
// Secret; servers here listen on 127.0.0.1 only, and generator/cluster/engines.py makes the serving
// certificate and registers the webhooks itself. So this command sets the webhook server's address and
// certificate folder and leaves the certificate rotation out; the PyTorchJob controller and webhook are the
// operator's own, set up as upstream sets them up (no gang scheduler: Kueue admits whole jobs here). The
// serving flags, probes and start are hack/controller-serving/serving.go's.
package main

import (
	"flag"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	schedulerpluginsv1alpha1 "sigs.k8s.io/scheduler-plugins/apis/scheduling/v1alpha1"

	kubeflowv1 "github.com/kubeflow/training-operator/pkg/apis/kubeflow.org/v1"
	"github.com/kubeflow/training-operator/pkg/config"
	controllerv1 "github.com/kubeflow/training-operator/pkg/controller.v1"
	"github.com/kubeflow/training-operator/pkg/controller.v1/common"
	"github.com/kubeflow/training-operator/pkg/webhooks"
)

func main() {
	var threads int
	flag.IntVar(&threads, "controller-threads", 1, "Worker threads of the PyTorchJob controller.")
	// the init container that makes a Worker wait for the Master's name: upstream's flags
	flag.StringVar(&config.Config.PyTorchInitContainerImage, "pytorch-init-container-image",
		config.PyTorchInitContainerImageDefault, "Image of the Workers' init container.")
	flag.StringVar(&config.Config.PyTorchInitContainerTemplateFile, "pytorch-init-container-template-file",
		config.PyTorchInitContainerTemplateFileDefault, "Template file of the Workers' init container.")
	flag.IntVar(&config.Config.PyTorchInitContainerMaxTries, "pytorch-init-container-max-tries",
		config.PyTorchInitContainerMaxTriesDefault, "Tries of the Workers' init container.")
	serve := parseServingFlags(zap.Options{Development: true, StacktraceLevel: zapcore.DPanicLevel})

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(kubeflowv1.AddToScheme(scheme))
	utilruntime.Must(schedulerpluginsv1alpha1.AddToScheme(scheme))

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		WebhookServer:          webhook.NewServer(serve.webhookOptions()),
		HealthProbeBindAddress: serve.probeAddr,
	})
	if err != nil {
		fail(err, "unable to create the manager")
	}
	kind := kubeflowv1.PyTorchJobKind
	setup := controllerv1.SupportedSchemeReconciler[kind]
	if err := setup(mgr, common.GenNonGangSchedulerSetupFunc(), threads); err != nil {
		fail(err, "unable to set up the PyTorchJob controller")
	}
	if err := webhooks.SupportedSchemeWebhook[kind](mgr); err != nil {
		fail(err, "unable to set up the PyTorchJob webhook")
	}
	runWithProbes(ctrl.SetupSignalHandler(), mgr)
}
