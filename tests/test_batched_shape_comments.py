"""Every tensor line of the batched model carries a shape comment in the legend's letters.

What is checked, statically (`ast` and `tokenize`, nothing runs): in each module of
detection/models/batched/, every simple statement (assignment, return, expression) whose value
contains a tensor operation has a comment with a shape (`[...]`) on its first or last line, and
every shape in any comment of the package uses only the letters that the legend at the top of
the package defines (plus integers, `+ - * ( )` and `...`).

A tensor operation is, as far as a reader of the source can tell without running it: a call of
`torch.*`, `F.*` or a function imported from torch / torchvision.ops; a call of one of the
package's own functions whose return annotation holds tensors (and no dict); a method call on a
tensor, or of a method only tensors have (`gather`, `new_zeros`, ...) on anything but a module;
indexing, arithmetic or a comparison with a tensor operand; a call of a module with a tensor
argument. Tensors are the parameters annotated with `Tensor`, the tensor fields of the package's
dataclasses (on a name their constructor or a function's return annotation types, or on
`self`), registered buffers, and every name a tensor statement assigns.

What is not checked: that a comment's shape is right (its rank or sizes), or that a tuple gets
one shape per tensor; a reviewer still reads those.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import torch

import detection.models.batched

PACKAGE = Path(detection.models.batched.__file__).parent
SHAPE = re.compile(r"\[([^\[\]]*)\]")
BUILTINS = {"len", "int", "float", "min", "max", "zip", "list", "tuple", "range", "enumerate"}
BUILTINS |= {"isinstance", "round", "sorted", "sum", "any", "all", "bool", "str", "print"}
CONTAINER_METHODS = set(dir(list)) | set(dir(dict)) | set(dir(str)) | set(dir(tuple))
# Attributes and methods of a tensor that give its metadata or host values, not a tensor.
METADATA = {"shape", "dtype", "device", "is_cuda", "ndim", "dim", "numel", "size", "item"}
METADATA |= {"tolist", "is_floating_point", "element_size", "data_ptr"}
TENSOR_ONLY_METHODS = (
    {name for name in dir(torch.Tensor) if not name.startswith("_")} - CONTAINER_METHODS - METADATA
)


def _walk(node: ast.AST):
    """`ast.walk`, without what lies under a tensor's metadata (`x.shape[0]`, `x.dim()`)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr in METADATA:
            return
    yield node
    if isinstance(node, ast.Attribute) and node.attr in METADATA:
        return
    for child in ast.iter_child_nodes(node):
        yield from _walk(child)


def legend_letters() -> set[str]:
    """The dimension letters the package docstring defines."""
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    assert doc and "Dimension letters:" in doc
    letters = set()
    for line in doc.split("Dimension letters:", 1)[1].splitlines():
        match = re.match(r"^    (\S+(?:, \S+)*)  ", line)
        if match:
            letters.update(match.group(1).split(", "))
    return letters


def comments_by_line(source: str) -> dict[int, str]:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0]: tok.string for tok in tokens if tok.type == tokenize.COMMENT}


class TensorLines:
    """The statements of one module that hold a tensor operation, by (first line, last line)."""

    def __init__(self, tree: ast.Module, package_trees: list[ast.Module]) -> None:
        self.tensor_functions: set[str] = set()
        self.tensor_fields: dict[str, set[str]] = {}
        self.external: set[str] = set()
        for module in package_trees:
            for node in ast.walk(module):
                if isinstance(node, ast.FunctionDef) and node.returns is not None:
                    returns = ast.unparse(node.returns)
                    if "Tensor" in returns and "dict" not in returns:
                        self.tensor_functions.add(node.name)
                if isinstance(node, ast.ClassDef):
                    self.tensor_fields[node.name] = {
                        item.target.id
                        for item in node.body
                        if isinstance(item, ast.AnnAssign)
                        and isinstance(item.target, ast.Name)
                        and "Tensor" in ast.unparse(item.annotation)
                    } | {
                        item.name
                        for item in node.body
                        if isinstance(item, ast.FunctionDef)
                        and item.returns is not None
                        and ast.unparse(item.returns) == "Tensor"
                    }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("torch") and not node.module.startswith(
                    "torchvision.models"
                ):
                    self.external.update(alias.asname or alias.name for alias in node.names)
        self.modules = {"torch", "F"} | {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        self.buffers = {
            node.args[0].value
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "register_buffer"
            and isinstance(node.args[0], ast.Constant)
        }
        self.tree = tree
        self.return_annotations = {
            node.name: ast.unparse(node.returns)
            for module in package_trees
            for node in ast.walk(module)
            if isinstance(node, ast.FunctionDef) and node.returns is not None
        }

    def statements(self) -> list[tuple[int, int, str]]:
        found = []
        for function in ast.walk(self.tree):
            if isinstance(function, ast.FunctionDef):
                found += self._function(function)
        return found

    def _function(self, function: ast.FunctionDef) -> list[tuple[int, int, str]]:
        tensors, typed = set(), {}
        for arg in function.args.args + function.args.kwonlyargs:
            annotation = ast.unparse(arg.annotation) if arg.annotation else ""
            if "Tensor" in annotation:
                tensors.add(arg.arg)
            for name in self.tensor_fields:
                if name in annotation:
                    typed[arg.arg] = name
        simple = [
            node
            for node in ast.walk(function)
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Return | ast.Expr)
            and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        ]
        flagged: dict[int, ast.stmt] = {}
        for _ in range(5):  # names flow from statement to statement: iterate to a fixpoint
            for node in simple:
                value = node.value
                if value is None:
                    continue
                if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
                    for name in self.tensor_fields:
                        if value.func.id == name or self._returns(value.func.id) == name:
                            for target in getattr(node, "targets", []):
                                if isinstance(target, ast.Name):
                                    typed[target.id] = name
                if self._is_tensor_op(value, tensors, typed):
                    flagged[id(node)] = node
                    targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
                    for target in targets:
                        for name in ast.walk(target) if target is not None else []:
                            if isinstance(name, ast.Name):
                                tensors.add(name.id)
        return [
            (node.lineno, node.end_lineno or node.lineno, ast.unparse(node).splitlines()[0])
            for node in flagged.values()
        ]

    def _returns(self, function: str) -> str | None:
        return self.return_annotations.get(function)

    def _is_tensor(self, node: ast.expr, tensors: set[str], typed: dict[str, str]) -> bool:
        if isinstance(node, ast.Name):
            return node.id in tensors
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "self":
                fields = set().union(*self.tensor_fields.values())
                return node.attr in self.buffers or node.attr in fields
            owner = typed.get(node.value.id)
            return owner is not None and node.attr in self.tensor_fields[owner]
        return self._is_tensor_op(node, tensors, typed)

    def _is_tensor_op(self, node: ast.expr, tensors: set[str], typed: dict[str, str]) -> bool:
        def tensor(child: ast.expr) -> bool:
            return self._is_tensor(child, tensors, typed)

        for child in _walk(node):
            if isinstance(child, ast.Call):
                func = child.func
                if isinstance(func, ast.Name):
                    if func.id in self.external or func.id in self.tensor_functions:
                        return True
                    continue
                if not isinstance(func, ast.Attribute):
                    continue
                root = func.value
                if isinstance(root, ast.Name) and root.id in self.modules:
                    if root.id in {"torch", "F"}:
                        return True
                    continue
                if tensor(root):
                    return True
                module = isinstance(root, ast.Attribute | ast.Name) and not tensor(root)
                if func.attr in TENSOR_ONLY_METHODS and not (
                    isinstance(root, ast.Attribute)
                    and isinstance(root.value, ast.Name)
                    and root.value.id == "self"
                ):
                    return True
                if module and func.attr not in CONTAINER_METHODS and func.attr not in BUILTINS:
                    if func.attr != "register_buffer" and any(tensor(a) for a in child.args):
                        return True
            elif isinstance(child, ast.Subscript):
                if tensor(child.value):
                    return True
            elif isinstance(child, ast.BinOp):
                if tensor(child.left) or tensor(child.right):
                    return True
            elif isinstance(child, ast.UnaryOp):
                if tensor(child.operand):
                    return True
            elif isinstance(child, ast.Compare):
                if any(tensor(part) for part in [child.left, *child.comparators]):
                    return True
        return False


def missing_shape_comments(source: str, package_trees: list[ast.Module]) -> list[str]:
    """'line: statement' for each tensor statement without a shape comment."""
    tree = ast.parse(source)
    comments = comments_by_line(source)
    missing = []
    for first, last, text in TensorLines(tree, package_trees).statements():
        if not any(SHAPE.search(comments.get(line, "")) for line in (first, last)):
            missing.append(f"{first}: {text}")
    return missing


def unknown_letters(source: str, letters: set[str]) -> list[str]:
    bad = []
    for line, comment in comments_by_line(source).items():
        for shape in SHAPE.findall(comment):
            for name in re.findall(r"[A-Za-z_]+", shape.replace("...", "")):
                if name not in letters:
                    bad.append(f"{line}: {name!r} in {comment}")
            if re.search(r"[^A-Za-z_0-9+\-*(), .]", shape):
                bad.append(f"{line}: {comment}")
    return bad


def _package() -> dict[str, str]:
    return {
        path.name: path.read_text()
        for path in sorted(PACKAGE.glob("*.py"))
        if path.name != "__init__.py"
    }


def test_every_tensor_line_has_a_shape_comment_in_the_legends_letters() -> None:
    sources = _package()
    trees = [ast.parse(source) for source in sources.values()]
    letters = legend_letters()
    assert {"B", "A", "P", "G", "S", "K", "D", "4"} <= letters
    problems, checked = [], 0
    for name, source in sources.items():
        problems += [f"{name}:{item}" for item in missing_shape_comments(source, trees)]
        problems += [f"{name}:{item}" for item in unknown_letters(source, letters)]
        checked += len(TensorLines(ast.parse(source), trees).statements())
    assert not problems, "\n".join(problems)
    # The detector sees the model's tensor lines (about 200), not a handful.
    assert checked > 150


def test_the_check_finds_a_tensor_line_without_a_comment() -> None:
    """The checker itself: it flags uncommented tensor lines of each kind, and nothing else."""
    source = """
import torch
from torch import Tensor

def f(boxes: Tensor, k: int) -> Tensor:
    n = len(boxes)
    top = boxes.topk(k)
    wide = boxes[..., 2] - boxes[..., 0]  # [B, N]
    area = wide * 2
    mask = wide > 0
    made = torch.zeros(n)
    kept = g(boxes)
    sizes = [n, k]
    return kept.new_zeros(())

def g(x: Tensor) -> Tensor:
    return x
"""
    tree = ast.parse(source)
    missing = [item.split(":")[0] for item in missing_shape_comments(source, [tree])]
    assert missing == ["7", "9", "10", "11", "12", "14"]
    assert unknown_letters("x = 1  # [B, Q]\n", {"B"}) == ["1: 'Q' in # [B, Q]"]
