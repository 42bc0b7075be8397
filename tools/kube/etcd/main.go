// Command etcd is the etcd server that k8s.io/kubernetes's go.mod requires, for the tests' API
// server.
//
// It is built here, beside kube-apiserver, rather than installed from Debian's etcd-server: the
// version is then the one kube-apiserver was released against (one module graph, so they cannot
// drift apart), CI needs no apt-get, and build.sh caches both binaries together. It is etcd's
// own entry point (etcdmain, the package the upstream etcd binary runs), not a hand-rolled
// embed.Config wrapper, so every etcd flag and --version behave as documented.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
