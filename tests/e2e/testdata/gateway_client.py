"""The ESB Gateway's calls to its agent, from Python, as the Gateway makes
them: a grpc channel (mutual TLS with ssl_channel_credentials from a CA,
a client certificate and key, or insecure on a unix: target) and stubs
generated from esbnet's agent.proto into STUBS.

Usage: gateway_client.py STUBS TARGET IMAGE OWNER [CA CERT KEY]
Prints one JSON line with what each call answered; exits 1 on a failure.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402

import agent_pb2  # noqa: E402
import agent_pb2_grpc  # noqa: E402


def main():
    target, image, owner = sys.argv[2], sys.argv[3], sys.argv[4]
    if len(sys.argv) > 5:
        ca, cert, key = (open(p, "rb").read() for p in sys.argv[5:8])
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        channel = grpc.secure_channel(target, creds)
    else:
        channel = grpc.insecure_channel(target)
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    out = {}
    w = stub.EnsureContainer(agent_pb2.EnsureContainerRequest(
        function_name="py-fn", image=image, owner_id=owner,
        env={"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256"}), timeout=60)
    out["worker"] = {"id": w.id, "ip_address": w.ip_address, "port": w.port}
    listed = stub.ListContainers(agent_pb2.ListContainersRequest(owner_id=owner), timeout=10)
    out["listed"] = [{"id": c.container_id, "status": c.status, "created_at": c.created_at} for c in listed.containers]
    resp = stub.InvokeWorker(agent_pb2.InvokeWorkerRequest(
        container_id=w.id, owner_id=owner, payload=b'{"from":"python"}', timeout_ms=10000), timeout=15)
    out["invoke"] = {"status_code": resp.status_code, "body": json.loads(resp.body)}
    d = stub.DestroyContainer(agent_pb2.DestroyContainerRequest(container_id=w.id, owner_id=owner), timeout=30)
    out["destroyed"] = d.success
    try:
        stub.PauseContainer(agent_pb2.PauseContainerRequest(container_id=w.id, owner_id=owner), timeout=10)
        out["pause_after_destroy"] = "OK"
    except grpc.RpcError as e:
        out["pause_after_destroy"] = e.code().name
    print(json.dumps(out))


if __name__ == "__main__":
    main()
