"""The array views a generated module's _train makes of its flat vectors.

Everything below the marker line is copied verbatim into every module (its
_train carves its parameters, gradients and work buffers out of theta, grad,
work and iwork). The module imports numba, cgutils, impl_ret_borrowed,
intrinsic, make_array and populate_array as this file does.
"""

# ruff: noqa: I001
import numba
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

# ---- generated modules include everything below this line ----


# A C-contiguous view of flat[start : start + prod(shape)] with the given shape.
# The kernels' own slicing and reshape would do, but each compiles bounds and
# layout checks with an error path, ten times the code of this view, and _train
# makes one per parameter, gradient and buffer: the views are carved out by the
# code generator, which sizes the vectors (_TRAIN_WORK), so no check is needed.
@intrinsic
def _view(typingctx, flat, start, shape):
    """flat: a 1-D C-contiguous array; start: an integer offset into it, in
    elements; shape: a tuple of integers. Returns an array of flat's dtype and
    that shape, C-contiguous, sharing flat's memory (and keeping it alive)."""
    ndim = len(shape)
    view_type = numba.types.Array(flat.dtype, ndim, "C")

    def codegen(context, builder, signature, args):
        flat_value, offset, dims = args
        source = make_array(signature.args[0])(context, builder, flat_value)
        view = make_array(view_type)(context, builder)
        item = context.get_abi_sizeof(context.get_data_type(flat.dtype))
        itemsize = context.get_constant(numba.types.intp, item)
        extents = cgutils.unpack_tuple(builder, dims, ndim)
        strides, stride = [], itemsize
        for extent in reversed(extents):  # C order: the last axis is contiguous
            strides.insert(0, stride)
            stride = builder.mul(stride, extent)
        populate_array(
            view,
            data=builder.gep(source.data, [offset]),
            shape=extents,
            strides=strides,
            itemsize=itemsize,
            meminfo=source.meminfo,
            parent=source.parent,
        )
        return impl_ret_borrowed(context, builder, view_type, view._getvalue())

    return view_type(flat, start, shape), codegen
