"""TensorFlow Federated's two building blocks: TensorFlow computations
(local work) and federated computations (placement and communication),
run on a TFF worker that fedclf owns and stops."""

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedclf.federated.backends.tff_context import TffRuntime

client_value = tff.FederatedType(np.float32, tff.CLIENTS)


@tff.tensorflow.computation(np.float32)
def square(x):
  return tf.square(x)  # plain TensorFlow: what each client runs locally


@tff.federated_computation(client_value)
def mean_of_squares(values):
  # Placement is explicit: map the local computation over the clients,
  # then aggregate their results at the server.
  return tff.federated_mean(tff.federated_map(square, values))


print("type signature:", mean_of_squares.type_signature)
with TffRuntime() as runtime:  # one local C++ worker, stopped on exit
  print("worker pids:", len(runtime.owned_pids), "owned")
  print("mean of squares over 4 clients:",
        mean_of_squares([1.0, 2.0, 3.0, 4.0]))
