"""A stand-in Kubernetes API server and KubeRay operator for the tests.

No kube-apiserver can run on the test machine, but real kubectl can: this
package serves the part of the Kubernetes API that kubectl and rlkit use
(discovery, OpenAPI v3, server-side apply, list/watch with selectors,
delete with garbage collection, the service proxy), checks RayCluster
objects against KubeRay's CRD, and runs an operator thread that turns each
RayCluster into a real Ray cluster whose "pods" are network namespaces on
this machine. Test infrastructure only: nothing here ships with rlkit.

Use it through the ``kube`` fixture in ``tests/kube/fixture.py``.
"""
