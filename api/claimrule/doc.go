// Package claimrule holds a service's claim rules: who may claim the
// service, in the placement constraints' syntax (api/ruleexpr), all of
// which must hold. It is the one home of the rule keys, their values'
// syntax, the checks the managers run at "service create/update", and the
// decision the agent takes when a container claims a service.
//
// Keys:
//
//	k8s.namespace            the pod's Kubernetes namespace
//	k8s.pod.label.<key>      a label of the pod (where the adapter knows pod labels)
//	containerd.namespace     the containerd namespace the container lives in
//	container.image          the container's image name, as containerd records it
//
// Values compare exactly (unlike placement constraints, which compare as
// swarm does, without regard to case): Kubernetes label values, containerd
// namespaces and image tags are case-sensitive, and a rule that admitted
// "Prod" for "prod" would admit a namespace its author never named.
//
// The decision (Set.Decide) reads Facts, which the agent builds from what
// an adapter reports and the container cannot forge. A fact the adapter
// did not report fails every rule on it, "==" and "!=" alike (fail
// closed). The secure default: a container of a Kubernetes pod may claim a
// service only when the service's rules name the pod's namespace with
// k8s.namespace==NAMESPACE; a service without rules stays claimable by
// containers outside Kubernetes.
//
// The package is pure and imports only the standard library and
// api/ruleexpr: no I/O, no gRPC, no containerd. The admin API validates
// with ParseSet; the agent reads the rules it receives with FromWire and
// decides with Set.Decide.
package claimrule
