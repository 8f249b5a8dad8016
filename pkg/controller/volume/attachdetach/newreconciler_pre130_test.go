//go:build kube_pre_1_30

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

package attachdetach_test

import (
	"time"

	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/kubernetes/pkg/controller/volume/attachdetach/cache"
	"k8s.io/kubernetes/pkg/controller/volume/attachdetach/reconciler"
	"k8s.io/kubernetes/pkg/controller/volume/attachdetach/statusupdater"
	"k8s.io/kubernetes/pkg/volume/util/operationexecutor"
)

// newReconciler calls reconciler.NewReconciler of v1.28 and v1.29, which
// always detach on timeout.
func newReconciler(loop, maxWaitForUnmount time.Duration, dsw cache.DesiredStateOfWorld, asw cache.ActualStateOfWorld,
	ex operationexecutor.OperationExecutor, nsu statusupdater.NodeStatusUpdater, nodes corelisters.NodeLister,
	recorder record.EventRecorder) reconciler.Reconciler {
	return reconciler.NewReconciler(loop, maxWaitForUnmount, time.Hour, false, dsw, asw, ex, nsu, nodes, recorder)
}
