"""
What every sb3_distill algorithm shares about its policy's layout.

The layout of a distillation policy (how many teachers, which students, whether the teacher shares the
students' stack) is given to the algorithm's constructor, passed to the policy once, and saved with both.
:class:`PolicyLayoutMixin` keeps SB3's contracts around it:

- ``policy_kwargs`` stays what the user gave (SB3's ``load(path, policy_kwargs=...)`` compares it with the
  stored dict): the layout arguments are added only while the policy is built;
- ``load(path, **kwargs)`` accepts every constructor argument, but one that changes the layout after
  training (sizes cannot change) raises a clear ``ValueError``, as SB3 does for ``policy_kwargs``.
"""

import sys
from collections.abc import Callable
from typing import Any, ClassVar

from stable_baselines3.common.save_util import load_from_zip_file


class PolicyLayoutMixin:
    """
    Mixin for an SB3 algorithm whose policy layout comes from constructor arguments.

    Subclasses set :attr:`layout_arguments` and call :meth:`_setup_policy_with_layout` in ``_setup_model``
    around SB3's ``super()._setup_model()``.
    """

    #: The algorithm's attribute -> the policy's keyword argument it sets
    layout_arguments: ClassVar[dict[str, str]] = {}
    #: Those that may change on ``load()`` (they select, they do not size, e.g. the member ``predict()`` uses)
    reloadable_layout_arguments: ClassVar[tuple[str, ...]] = ()
    policy_kwargs: dict[str, Any]

    def _setup_policy_with_layout(self, setup_model: Callable[[], None]) -> None:
        """
        Run ``setup_model`` (SB3's ``_setup_model``) with the layout arguments added to ``policy_kwargs``, which
        is then restored to the user's dict.

        :param setup_model: the parent class's ``_setup_model``
        """
        layout = {key: getattr(self, name) for name, key in self.layout_arguments.items()}
        clash = sorted(set(layout) & set(self.policy_kwargs))
        if clash:
            names = [name for name, key in self.layout_arguments.items() if key in clash]
            raise ValueError(
                f"`policy_kwargs` must not set {clash}: they are set by the {type(self).__name__} arguments {names}"
            )
        user_policy_kwargs = self.policy_kwargs
        self.policy_kwargs = {**user_policy_kwargs, **layout}
        try:
            setup_model()
        finally:
            self.policy_kwargs = user_policy_kwargs

    @classmethod
    def check_layout_overrides(cls, path: Any, kwargs: dict[str, Any], device: Any = "auto") -> None:
        """
        A ``ValueError`` if ``load(path, **kwargs)`` would change the layout of the saved networks.

        :param path: the saved model
        :param kwargs: the keyword arguments given to ``load``
        :param device: the device to read the file on
        """
        names = [name for name in cls.layout_arguments if name in kwargs and name not in cls.reloadable_layout_arguments]
        if not names:
            return
        # A bad number gets its own error first (the algorithm module's `NUMBERS`, as `_setup_model` checks them)
        specs = getattr(sys.modules[cls.__module__], "NUMBERS", {})
        for name in names:
            if name in specs:
                specs[name].check(kwargs[name], name)
        position = path.tell() if hasattr(path, "seek") else None
        data, _, _ = load_from_zip_file(path, device=device, load_data=True)
        if position is not None:
            path.seek(position)  # a file object: SB3's load reads it again
        for name in names:
            if data is not None and name in data and not _same(kwargs[name], data[name]):
                raise ValueError(
                    f"`{name}` cannot change after training: the networks were saved with {name}={data[name]!r}, "
                    f"got {kwargs[name]!r}. Load without `{name}`, or train a new model"
                )

    @classmethod
    def load(  # type: ignore[no-untyped-def]
        cls,
        path,
        env=None,
        device="auto",
        custom_objects=None,
        print_system_info=False,
        force_reset=True,
        **kwargs,
    ):
        """SB3's ``load``, with a clear error for a keyword argument that would change the saved layout."""
        cls.check_layout_overrides(path, kwargs, device)
        return super().load(  # type: ignore[misc]
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )


def _same(new: Any, stored: Any) -> bool:
    """Whether a layout argument given to ``load`` equals the stored one (numbers compared by value)."""
    try:
        return bool(new == stored)
    except Exception:  # e.g. arrays or objects without a truth value
        return False


class TeacherWeightsMixin:
    """
    For an algorithm whose policy holds a frozen copy of a teacher (``policy.teacher``): the weights of a
    teacher given to ``load(path, teacher=other)`` replace the saved teacher's (whose network may differ),
    instead of being overwritten by them when SB3's ``load()`` restores the saved parameters after
    ``_setup_model()``. ``_setup_model()`` calls :meth:`_install_new_teacher` with the new teacher's weights.
    """

    policy: Any

    def _install_new_teacher(self, teacher_state: dict[str, Any]) -> None:
        """Copy a new teacher's weights into the policy, and keep them until ``load()`` sets the parameters."""
        self._new_teacher_state = teacher_state
        self.policy.teacher.load_state_dict(teacher_state)

    def _forget_new_teacher(self) -> None:
        """Called by ``__init__`` after ``_setup_model()``: no saved parameters will follow."""
        self.__dict__.pop("_new_teacher_state", None)

    def set_parameters(
        self,
        load_path_or_dict: str | dict[str, Any],
        exact_match: bool = True,
        device: Any = "auto",
    ) -> None:
        """
        SB3's ``set_parameters``; after ``load(path, teacher=other)``, with ``other``'s weights for the teacher.
        """
        teacher_state = self.__dict__.pop("_new_teacher_state", None)
        if teacher_state is None:
            super().set_parameters(load_path_or_dict, exact_match=exact_match, device=device)  # type: ignore[misc]
            return
        params: Any
        if isinstance(load_path_or_dict, dict):
            params = dict(load_path_or_dict)
        else:
            _, params, _ = load_from_zip_file(load_path_or_dict, device=device, load_data=False)
        policy_state = {key: value for key, value in params["policy"].items() if not key.startswith("teacher.")}
        policy_state.update({f"teacher.{key}": value for key, value in teacher_state.items()})
        params["policy"] = policy_state
        super().set_parameters(params, exact_match=exact_match, device=device)  # type: ignore[misc]
