"""Each private MXNet API the package uses (stn_gluon._runtime.mxnet_internals), on real MXNet objects.

One test per function: if an MXNet release renames or changes what one of them reads or calls, its test
fails here, naming it, instead of a training run misbehaving somewhere else.
"""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from stn_gluon._runtime import mxnet_internals as internals


def _trainer(optimizer="sgd", kvstore=None, update_on_kvstore=None, contexts=(mx.cpu(),), **params):
    net = gluon.nn.Dense(3, in_units=4)
    net.initialize(mx.init.Constant(0.5), ctx=list(contexts))
    trainer = gluon.Trainer(net.collect_params(), optimizer, dict(learning_rate=0.1, **params), kvstore=kvstore,
                            update_on_kvstore=update_on_kvstore)
    return net, trainer


def _step(net, trainer, contexts=(mx.cpu(),)):
    for ctx in contexts:
        with autograd.record():
            loss = net(mx.nd.ones((2, 4), ctx=ctx)).sum()
        loss.backward()
    trainer.step(2)


def _module(optimizer="sgd", kvstore="local", contexts=(mx.cpu(),)):
    data = mx.sym.var("data")
    out = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(data, num_hidden=3, name="fc"), name="softmax")
    module = mx.mod.Module(out, context=list(contexts))
    module.bind([("data", (2, 4))], [("softmax_label", (2,))])
    module.init_params(mx.init.Constant(0.5))
    module.init_optimizer(kvstore=kvstore, optimizer=optimizer, optimizer_params=dict(learning_rate=0.1))
    return module


def test_the_versions_checked_include_the_installed_one():
    assert mx.__version__ in internals.CHECKED_WITH, (
        f"MXNet {mx.__version__}: re-check stn_gluon/_runtime/mxnet_internals.py and add it to CHECKED_WITH")


def test_barrier_is_kvstores_private_barrier():
    kv = mx.kv.create("local")
    assert callable(getattr(kv, "_barrier", None)), "KVStore._barrier is gone"
    internals.barrier(kv)  # a group of one: returns at once


def test_create_kvstore_confirms_init_and_broadcast_and_trainer_calls_them(monkeypatch):
    kv = internals.create_kvstore("local")
    assert isinstance(kv, mx.kvstore.KVStore) and type(kv) is not mx.kvstore.KVStore
    assert kv.type == "local" and kv.rank == 0 and kv.num_workers == 1
    kv.init(3, mx.nd.ones((2,)) * 7)
    out = mx.nd.zeros((2,))
    kv.pull(3, out=out)
    assert out.asnumpy().tolist() == [7.0, 7.0]
    outs = [mx.nd.zeros((2,)), mx.nd.zeros((2,))]
    kv.broadcast(4, mx.nd.ones((2,)) * 5, out=outs)
    assert [o.asnumpy().tolist() for o in outs] == [[5.0, 5.0], [5.0, 5.0]]
    # Gluon's Trainer must go through the store's broadcast (and so through the confirmed one)
    calls = []
    cls = type(kv)
    real = cls.broadcast
    monkeypatch.setattr(cls, "broadcast", lambda self, *a, **k: (calls.append(a[0]), real(self, *a, **k))[1])
    net, trainer = _trainer(kvstore=internals.create_kvstore("device"), update_on_kvstore=False)
    _step(net, trainer)
    assert calls, "gluon.Trainer no longer initialises its parameters with kvstore.broadcast"


def test_kvstore_updater_is_the_optimizer_a_local_store_applies():
    kv = mx.kv.create("local")
    assert internals.kvstore_updater(kv) is None
    kv.set_optimizer(mx.optimizer.SGD(learning_rate=0.1))
    updater = internals.kvstore_updater(kv)
    assert isinstance(updater, mx.optimizer.Updater) and isinstance(updater.optimizer, mx.optimizer.SGD)


def test_trainer_kvstore_args_are_the_constructors():
    store = mx.kv.create("local")
    _, trainer = _trainer(kvstore=store, update_on_kvstore=False)
    assert internals.trainer_kvstore_args(trainer) == (store, False)
    _, named = _trainer(kvstore="device")
    assert internals.trainer_kvstore_args(named) == ("device", None)


def test_trainer_updaters_hold_the_state_the_step_updates():
    net, trainer = _trainer(momentum=0.9)
    updaters = internals.trainer_updaters(trainer)
    assert len(updaters) == 1 and isinstance(updaters[0], mx.optimizer.Updater)
    _step(net, trainer)
    assert updaters[0].states, "the Trainer's own updater did not take the step"
    momentum = [s for s in updaters[0].states.values() if s is not None]
    assert momentum and float(np.abs(momentum[0].asnumpy()).sum()) > 0


@pytest.mark.parametrize("update_on_kvstore", [True, False])
def test_init_trainer_kvstore_sets_up_what_the_first_step_would(update_on_kvstore):
    contexts = (mx.cpu(0), mx.cpu(1))
    net, trainer = _trainer(kvstore="device", update_on_kvstore=update_on_kvstore, contexts=contexts, momentum=0.9)
    store, on_store = internals.init_trainer_kvstore(trainer)
    assert isinstance(store, mx.kvstore.KVStore) and on_store is update_on_kvstore
    assert internals.init_trainer_kvstore(trainer) == (store, on_store)  # once only
    _step(net, trainer, contexts)  # and the step runs on what was set up
    if on_store:
        assert internals.kvstore_updater(store).states
    else:
        assert all(u.states for u in internals.trainer_updaters(trainer))


def test_module_optimizer_is_the_one_that_steps():
    module = _module()
    opt = internals.module_optimizer(module)
    assert isinstance(opt, mx.optimizer.SGD) and opt.learning_rate == pytest.approx(0.1)
    batch = mx.io.DataBatch([mx.nd.ones((2, 4))], [mx.nd.array([0, 1])])
    module.forward_backward(batch)
    module.update()
    assert opt.num_update == 1


@pytest.mark.parametrize("kvstore, on_store", [("local", True), (None, False)])
def test_module_update_target_says_where_the_optimizer_runs(kvstore, on_store):
    module = _module(kvstore=kvstore, contexts=(mx.cpu(0), mx.cpu(1)))  # one context would need no store
    on, store, updater = internals.module_update_target(module)
    assert on is on_store
    if on_store:
        assert isinstance(store, mx.kvstore.KVStore) and internals.kvstore_updater(store) is not None
    else:
        assert store is None and isinstance(updater, mx.optimizer.Updater)


def test_update_counts_round_trip_and_drive_adams_bias_correction():
    net, trainer = _trainer("adam")
    _step(net, trainer)
    _step(net, trainer)
    opt = internals.trainer_updaters(trainer)[0].optimizer
    counts = internals.update_counts(opt)
    assert counts and all(n == 2 for c in counts.values() for n in c.values())
    fresh = mx.optimizer.Adam()
    assert internals.update_counts(fresh) == {0: {}}
    internals.set_update_counts(fresh, {0: {0: 5}})
    fresh._update_count(0)  # what Adam's update does first: the count it corrects by moves on from there
    assert internals.update_counts(fresh) == {0: {0: 6}}
    internals.set_update_counts(fresh, {})
    assert internals.update_counts(fresh) == {0: {}}


def test_load_param_data_initialises_a_parameter_from_an_array():
    param = gluon.Parameter("w", shape=(2, 3))
    internals.load_param_data(param, mx.nd.ones((2, 3)) * 4, mx.cpu())
    assert param.data().asnumpy().tolist() == [[4.0] * 3] * 2
    with pytest.raises(AssertionError):  # a wrong shape is refused, not loaded
        internals.load_param_data(gluon.Parameter("v", shape=(3, 3)), mx.nd.ones((2, 3)), mx.cpu())


def test_clear_cached_graph_retraces_a_hybridized_block():
    class Switch(gluon.HybridBlock):
        def __init__(self):
            super().__init__()
            self.double = False

        def hybrid_forward(self, F, x):
            return x * 2 if self.double else x

    block = Switch()
    block.hybridize()
    x = mx.nd.ones((1,))
    assert block(x).asscalar() == 1
    block.double = True
    assert block(x).asscalar() == 1  # the cached graph
    internals.clear_cached_graph(block)
    assert block(x).asscalar() == 2


def test_onnx_graph_class_holds_a_registry_per_opset_and_builds_graph_protos():
    graph = internals.onnx_graph_class()
    assert isinstance(graph.registry_, dict) and 12 in graph.registry_  # MXNet's own converters, by opset
    assert "FullyConnected" in graph.registry_[12] and callable(graph.registry_[12]["FullyConnected"])
    assert callable(getattr(graph(), "create_onnx_graph_proto"))


def test_onnx_converter_inputs_read_a_node_as_mxnets_converters_do():
    get_inputs, get_input_dtypes = internals.onnx_converter_inputs()
    class Output:  # what the exporter keeps per node output: its ONNX name and dtype
        name, dtype = "data", np.dtype("float32")

    node = {"name": "fc", "inputs": [[0, 0, 0]], "attrs": {"num_hidden": "3"}}
    kwargs = {"outputs_lookup": [[Output()]], "opset_version": 13}
    name, inputs, attrs = get_inputs(node, kwargs)
    assert (name, inputs, attrs) == ("fc", ["data"], {"num_hidden": "3"})
    assert get_input_dtypes(node, kwargs) == [np.dtype("float32")]


def test_gluon_repo_url_names_the_file_in_gluons_dataset_repository(monkeypatch):
    monkeypatch.delenv("MXNET_GLUON_REPO", raising=False)
    url = internals.gluon_repo_url("gluon/dataset/mnist", "t10k-labels-idx1-ubyte.gz")
    assert url.startswith("https://") and url.endswith("gluon/dataset/mnist/t10k-labels-idx1-ubyte.gz")
    monkeypatch.setenv("MXNET_GLUON_REPO", "https://mirror.example/")
    assert internals.gluon_repo_url("gluon/dataset/mnist", "a.gz") == "https://mirror.example/gluon/dataset/mnist/a.gz"
