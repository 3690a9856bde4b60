"""What users hand to tt_cross and tt_entries besides arrays and callables: TensorLy's
factorized tensors, np.matrix, sparse matrices, pandas objects, masked and unsigned indices.
Each is read correctly or refused by name, never crashed on deep inside."""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc


def test_a_tt_tensor_is_crossed_through_its_entries():
    tt = tl.random.random_tt((4, 5, 6), rank=[1, 2, 3, 1], random_state=0)
    dense = tl.tt_to_tensor(tt)
    for result in (tlc.tt_cross(tt, random_state=0),
                   tlc.tensor_train_cross(tt, [1, 2, 3, 1], random_state=0)):
        np.testing.assert_allclose(tl.tt_to_tensor(result), dense, atol=1e-10 * abs(dense).max())


def test_other_factorized_tensors_are_refused_by_kind():
    cp = tl.random.random_cp((4, 5, 6), 2, random_state=0)
    tucker = tl.random.random_tucker((4, 5, 6), [2, 2, 2], random_state=0)
    for tensor, kind in ((cp, "CPTensor"), (tucker, "TuckerTensor")):
        with pytest.raises(TypeError, match=f"tensor is a TensorLy {kind}: pass tensor.to_tensor"):
            tlc.tt_cross(tensor)
        with pytest.raises(TypeError, match=f"got {kind}"):
            tlc.tt_entries(tensor, [[0, 0, 0]])
    with pytest.raises(TypeError, match="got NoneType"):
        tlc.tt_entries(None, [[0, 0]])


def test_a_numpy_matrix_is_read_as_its_array():
    matrix = np.matrix(np.outer(np.arange(1.0, 5.0), np.arange(1.0, 6.0)))
    tt = tlc.tt_cross(matrix, rank=1, random_state=0)
    np.testing.assert_allclose(tl.tt_to_tensor(tt), np.asarray(matrix), rtol=1e-12)


def test_sparse_and_pandas_inputs_are_refused_with_the_conversion_to_make():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError,
                       match=r"tensor is a scipy.sparse csr_matrix: pass tensor.toarray\(\)"):
        tlc.tt_cross(sparse.csr_matrix(np.ones((4, 4))))
    pandas = pytest.importorskip("pandas")
    with pytest.raises(TypeError, match=r"tensor is a pandas DataFrame: pass tensor.to_numpy\(\)"):
        tlc.tt_cross(pandas.DataFrame(np.ones((4, 4))))


def test_masked_and_huge_unsigned_indices_are_refused():
    tt = tl.random.random_tt((4, 5, 6), rank=[1, 2, 2, 1], random_state=0)
    with pytest.raises(TypeError, match="masked array"):
        tlc.tt_entries(tt, np.ma.array([[0, 1, 2]], mask=[[0, 1, 0]]))
    with pytest.raises(ValueError, match="18446744073709551615 is out of range"):
        tlc.tt_entries(tt, np.array([[2**64 - 1, 0, 0]], dtype=np.uint64))


def test_cache_arguments_are_checked_by_name():
    from tensorly_cross.lazy.cache import EvaluationCache

    with pytest.raises(TypeError, match=r"cache_bytes must be an integer, got 'x'"):
        tlc.DaskTensor(np.ones((4, 4)), cache_bytes="x")
    with pytest.raises(ValueError, match="cache_bytes must be >= 0, got -5"):
        tlc.DaskTensor(np.ones((4, 4)), cache_bytes=-5)
    with pytest.raises(TypeError, match="lazy must be a LazyTensor"):
        EvaluationCache(np.ones((3, 3)))
    with pytest.raises(TypeError, match="max_evals must be an integer, got 1.5"):
        EvaluationCache(tlc.lazy_tensor(np.ones((3, 3))), max_evals=1.5)


def test_index_set_records_and_quantics_layouts_of_the_wrong_kind_are_named():
    tensor = np.random.default_rng(0).random((4, 5, 6))
    record = tlc.select_indices(tensor, rank=2, random_state=0).to_dict()
    for key in ("shape", "left", "right"):
        with pytest.raises(ValueError, match=f"index sets' '{key}' must be a list"):
            tlc.cross_interpolate(tensor, dict(record, **{key: None}))
    with pytest.raises(TypeError, match="index sets must be a dict"):
        tlc.CrossIndices.from_dict([record])
    lazy = tlc.QuanticsTensor(tlc.FunctionTensor(lambda i: np.cos(i[:, 0] / 5.0), (16,)))
    tt_q = tlc.tt_cross(lazy, tol=1e-8, random_state=0)
    with pytest.raises(TypeError, match="layout must be a QuanticsLayout"):
        tlc.qtt_to_tt(tt_q, None)
    twelve = tlc.QuanticsLayout.create((12,))  # digits 2, 2, 3
    with pytest.raises(ValueError, match="are not the layout's quantics modes"):
        tlc.qtt_to_tt([np.ones((1, 2, 1))] * 3, twelve)  # three cores, but of size 2


def test_a_scalar_and_torch_cores_that_require_grad_under_numpy(tmp_path):
    with pytest.raises(ValueError, match="input_tensor is 0-d"):
        tlc.tensor_train_cross(np.array(3.0), 1)
    torch = pytest.importorskip("torch")
    cores = [torch.ones((1, 3, 2), dtype=torch.float64, requires_grad=True),
             torch.ones((2, 3, 1), dtype=torch.float64)]
    with tl.backend_context("numpy"):  # numpy() of a tensor that requires grad raised
        path = tlc.save_tt(tmp_path / "torch.tt.npz", cores)
        loaded, _ = tlc.load_tt(path)
    np.testing.assert_array_equal(loaded[0], np.ones((1, 3, 2)))


@pytest.mark.parametrize("function", [tlc.tt_cross, tlc.select_indices])
def test_a_path_is_refused_with_how_to_open_it(function, tmp_path):
    # "obj must be a LazyTensor ...; got str": the argument is called tensor, and a user who
    # passes a file name needs to hear about open_volume.
    path = str(tmp_path / "scan.nii.gz")
    with pytest.raises(TypeError, match=r"tensor must be a LazyTensor.*got str\. To read the "
                                        r"volume stored at .*scan\.nii\.gz.*open_volume\(path\)"):
        function(path, tol=0.1)
    with pytest.raises(TypeError, match="shape is required when tensor is a callable"):
        function(lambda idx: idx.sum(axis=1), tol=0.1)
